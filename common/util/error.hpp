// The one error idiom of the project: fde::Result<T> carries a value or an fde::Error.
#pragma once

#include <string>
#include <string_view>

#include <tl/expected.hpp>

namespace fde {

// Stable error codes; their names appear in logs, JSON output and the wire protocol.
enum class Errc {
  invalid_argument,     // the caller passed something unusable
  malformed,            // input bytes do not follow the expected encoding
  too_large,            // input exceeds a documented size limit
  unsupported,          // well-formed but uses a feature we refuse (algorithm, tag, ABI)
  verification_failed,  // a signature, chain or binding did not verify
  io,                   // reading or writing a file or device failed
  not_found,            // a named thing does not exist
  internal,             // a library call failed where it should not
};

std::string_view errc_name(Errc code);

struct Error {
  Errc code = Errc::internal;
  std::string message;

  // "malformed: token: trailing bytes after the CBOR item": the code and the message, for logs
  // and machine-read output. Command lines print `message` alone: the code is an internal name
  // an administrator has no use for (fde-admin --json and the admin socket keep it).
  std::string describe() const;
};

template <class T>
using Result = tl::expected<T, Error>;

// Shorthand for returning an error: `return fail(Errc::malformed, "...");`
inline tl::unexpected<Error> fail(Errc code, std::string message) {
  return tl::unexpected<Error>(Error{code, std::move(message)});
}

// Prefix an error's message with context ("device certificate: " + message).
inline tl::unexpected<Error> fail_with_context(std::string_view context, Error error) {
  error.message = std::string(context) + ": " + error.message;
  return tl::unexpected<Error>(std::move(error));
}

}  // namespace fde
