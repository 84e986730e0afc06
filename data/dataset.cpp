// PLACEHOLDER: datasets (in progress)
