// Shared test assertion: a call must throw retort::Error whose message contains every needle
// (the function name, the shapes, the key, the file...) — our errors must say what was wrong.
#pragma once
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "engine/error.h"

namespace retort::testing {

template <class F>
void expect_error(F&& f, std::initializer_list<const char*> needles) {
  try {
    f();
    FAIL() << "expected retort::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "missing '" << n << "' in: " << msg;
  }
}

}  // namespace retort::testing
