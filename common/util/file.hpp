// Bounded file reading (refuses files over a limit before reading them) and atomic writing.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>

#include "common/util/bytes.hpp"

namespace fde {

// Reads a whole regular file (or a sysfs/char file that reports size 0) of at most
// max_size bytes. Larger files fail with Errc::too_large before any content is read.
Result<Bytes> read_file(const std::string& path, std::size_t max_size);

// Reads a file that holds either raw binary or hex text (as some public token dumps are):
// if every byte is a hex digit or whitespace, it is decoded as hex (an odd number of digits
// is then an error, which names the truncated dump rather than calling it bad CBOR).
Result<Bytes> read_binary_or_hex_file(const std::string& path, std::size_t max_binary_size);

// Writes a whole file, replacing it atomically (temporary file beside it + rename), with
// exactly `mode` whatever the umask. Used for key files (0600), tokens and logs.
Result<void> write_file_atomic(const std::string& path, ByteView data, mode_t mode);

}  // namespace fde
