// Shared test helpers for errors: a call must throw retort::Error whose message contains every needle
// (the function name, the shapes, the key, the file...) — our errors must say what was wrong; and the
// message itself, for tests that check it piece by piece.
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

// The message of the retort::Error that f throws, or "(no error)" when it returns.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace retort::testing
