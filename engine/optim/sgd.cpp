// PLACEHOLDER: optimizers (in progress)
