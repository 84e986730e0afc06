// PLACEHOLDER (helper in progress)
