// PLACEHOLDER
#include <gtest/gtest.h>
