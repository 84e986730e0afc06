// Seeded random numbers (see generator.h).
#include "engine/generator.h"

#include <cmath>
#include <numbers>
#include <sstream>

#include "engine/error.h"

namespace retort {

double Generator::normal() {
  double u1 = uniform();
  while (u1 <= 0.0) u1 = uniform();
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

std::string Generator::state() const {
  std::ostringstream os;
  os << seed_ << ' ' << engine_;
  return os.str();
}

void Generator::set_state(const std::string& s) {
  std::istringstream is(s);
  is >> seed_ >> engine_;
  RETORT_CHECK(!is.fail(), "Generator::set_state: malformed generator state (", s.size(), " bytes)");
}

}  // namespace retort
