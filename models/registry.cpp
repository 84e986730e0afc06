// PLACEHOLDER: model zoo (in progress)
