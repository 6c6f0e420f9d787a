// Names for error codes.
#include "common/util/error.hpp"

namespace fde {

std::string_view errc_name(Errc code) {
  switch (code) {
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::malformed: return "malformed";
    case Errc::too_large: return "too_large";
    case Errc::unsupported: return "unsupported";
    case Errc::verification_failed: return "verification_failed";
    case Errc::io: return "io";
    case Errc::not_found: return "not_found";
    case Errc::internal: return "internal";
  }
  return "unknown";
}

std::string Error::describe() const { return std::string(errc_name(code)) + ": " + message; }

}  // namespace fde
