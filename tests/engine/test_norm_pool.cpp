// PLACEHOLDER (helper in progress)
#include <gtest/gtest.h>
