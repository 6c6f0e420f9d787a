// Bounded file reading: refuses files over a limit before reading them.
#pragma once

#include <cstddef>
#include <string>

#include "common/util/bytes.hpp"

namespace fde {

// Reads a whole regular file (or a sysfs/char file that reports size 0) of at most
// max_size bytes. Larger files fail with Errc::too_large before any content is read.
Result<Bytes> read_file(const std::string& path, std::size_t max_size);

// Reads a file that holds either raw binary or hex text (as some public token dumps are):
// if every byte is a hex digit or whitespace and the count of digits is even, it is decoded.
Result<Bytes> read_binary_or_hex_file(const std::string& path, std::size_t max_binary_size);

}  // namespace fde
