// RawFile: positional I/O on raw disk images with errors that name the file.
#include "image-builder/disk/raw_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

namespace fde::image {
namespace {

tl::unexpected<Error> io_error(const std::string& what, const std::string& path, int err) {
  return fail(Errc::io, what + " " + path + ": " + std::strerror(err));
}

// pwrite until all of `data` is at `offset` (retrying after signals); 0, or the errno of
// the write that failed, with `done` the bytes written before it.
int write_fully(int fd, std::uint64_t offset, ByteView data, std::size_t& done) {
  while (done < data.size()) {
    const ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    done += static_cast<std::size_t>(n);
  }
  return 0;
}

}  // namespace

RawFile::~RawFile() { close(); }

RawFile::RawFile(RawFile&& other) noexcept
    : fd_(other.fd_), direct_fd_(other.direct_fd_), path_(std::move(other.path_)),
      writeback_every_(other.writeback_every_), not_written_back_(other.not_written_back_) {
  other.fd_ = -1;
  other.direct_fd_ = -1;
}

RawFile& RawFile::operator=(RawFile&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = other.fd_;
    direct_fd_ = other.direct_fd_;
    path_ = std::move(other.path_);
    writeback_every_ = other.writeback_every_;
    not_written_back_ = other.not_written_back_;
    other.fd_ = -1;
    other.direct_fd_ = -1;
  }
  return *this;
}

void RawFile::close() {
  if (direct_fd_ >= 0) ::close(direct_fd_);
  direct_fd_ = -1;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool RawFile::write_aligned_directly() {
  if (direct_fd_ >= 0) return true;
  if (fd_ < 0) return false;
  // A second descriptor of the same open file, by its /proc name (no path to re-resolve).
  direct_fd_ = ::open(fd_path().c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
  return direct_fd_ >= 0;  // tmpfs and some other filesystems refuse O_DIRECT
}

Result<RawFile> RawFile::open(const std::string& path, Mode mode) {
  if (mode == Mode::create_new) return create(path, 0600);
  const int fd = ::open(path.c_str(), O_CLOEXEC | (mode == Mode::read_only ? O_RDONLY : O_RDWR));
  if (fd < 0) {
    if (errno == ENOENT) return fail(Errc::not_found, path + ": no such file");
    return io_error("cannot open", path, errno);
  }
  RawFile file;
  file.fd_ = fd;
  file.path_ = path;
  if (mode == Mode::read_only) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return io_error("cannot stat", path, errno);
    if (!S_ISREG(st.st_mode)) return fail(Errc::invalid_argument, path + " is not a regular file");
  }
  return file;
}

Result<RawFile> RawFile::create(const std::string& path, mode_t permissions) {
  // O_EXCL: an existing name (a file, or a symlink wherever it points) is an error, never
  // written through; O_NOFOLLOW says the same for the last component on its own.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST || errno == ELOOP)
      return fail(Errc::invalid_argument, path + " already exists (fde-image writes only files it creates; remove it)");
    if (errno == ENOENT) return fail(Errc::not_found, path + ": no such directory");
    return io_error("cannot create", path, errno);
  }
  RawFile file;
  file.fd_ = fd;
  file.path_ = path;
  // Exactly `permissions`, whatever the umask.
  if (::fchmod(fd, permissions) != 0) {
    const int err = errno;
    file.close();
    ::unlink(path.c_str());
    return io_error("cannot set the mode of", path, err);
  }
  return file;
}

std::string RawFile::fd_path() const { return "/proc/self/fd/" + std::to_string(fd_); }

Result<std::uint64_t> RawFile::size() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return io_error("cannot stat", path_, errno);
  return static_cast<std::uint64_t>(st.st_size);
}

Result<void> RawFile::resize(std::uint64_t new_size) {
  if (::ftruncate(fd_, static_cast<off_t>(new_size)) != 0)
    return io_error("cannot resize", path_, errno);
  return {};
}

Result<void> RawFile::read_at(std::uint64_t offset, std::span<std::uint8_t> out) const {
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd_, out.data() + done, out.size() - done,
                              static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("cannot read", path_, errno);
    }
    if (n == 0)
      return fail(Errc::malformed, path_ + ": unexpected end of file at byte " +
                                       std::to_string(offset + done));
    done += static_cast<std::size_t>(n);
  }
  return {};
}

Result<void> RawFile::write_at(std::uint64_t offset, ByteView data) {
  if (direct_fd_ >= 0 && offset % direct_alignment == 0 && data.size() % direct_alignment == 0 &&
      reinterpret_cast<std::uintptr_t>(data.data()) % direct_alignment == 0 && !data.empty()) {
    std::size_t done = 0;
    const int err = write_fully(direct_fd_, offset, data, done);
    if (err == 0) return {};
    if (err != EINVAL || done != 0) return io_error("cannot write", path_, err);
    // The filesystem wants another alignment after all: buffered from now on.
    ::close(direct_fd_);
    direct_fd_ = -1;
  }
  std::size_t done = 0;
  if (const int err = write_fully(fd_, offset, data, done); err != 0) return io_error("cannot write", path_, err);
  if (writeback_every_ != 0) {
    not_written_back_ += data.size();
    if (not_written_back_ >= writeback_every_) {
      // Starts writeback of every dirty page and does not wait for it. Only a hint: an error
      // here shows again at sync(), which is what decides.
      (void)::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
      not_written_back_ = 0;
    }
  }
  return {};
}

bool is_all_zero(ByteView data) {
  // Compare 8 bytes at a time; memcmp against the shifted buffer would be clever but slower.
  std::size_t i = 0;
  for (; i + 8 <= data.size(); i += 8) {
    std::uint64_t word;
    std::memcpy(&word, data.data() + i, 8);
    if (word != 0) return false;
  }
  for (; i < data.size(); ++i)
    if (data[i] != 0) return false;
  return true;
}

Result<void> RawFile::write_sparse_at(std::uint64_t offset, ByteView data) {
  constexpr std::size_t block = 4096;
  std::size_t run_start = 0;
  std::size_t run_length = 0;
  for (std::size_t at = 0; at < data.size(); at += block) {
    const std::size_t n = std::min(block, data.size() - at);
    if (is_all_zero(data.subspan(at, n))) {
      if (run_length > 0)
        if (auto ok = write_at(offset + run_start, data.subspan(run_start, run_length)); !ok)
          return ok;
      run_length = 0;
      continue;
    }
    if (run_length == 0) run_start = at;
    run_length += n;
  }
  if (run_length > 0) return write_at(offset + run_start, data.subspan(run_start, run_length));
  return {};
}

Result<std::uint64_t> RawFile::next_data(std::uint64_t offset) const {
  const off_t at = ::lseek(fd_, static_cast<off_t>(offset), SEEK_DATA);
  if (at < 0) {
    if (errno == ENXIO) return size();
    return io_error("cannot seek in", path_, errno);
  }
  return static_cast<std::uint64_t>(at);
}

Result<std::uint64_t> RawFile::next_hole(std::uint64_t offset) const {
  const off_t at = ::lseek(fd_, static_cast<off_t>(offset), SEEK_HOLE);
  if (at < 0) {
    if (errno == ENXIO) return size();
    return io_error("cannot seek in", path_, errno);
  }
  return static_cast<std::uint64_t>(at);
}

Result<std::vector<DiskRange>> RawFile::data_ranges(std::uint64_t offset, std::uint64_t length) const {
  std::vector<DiskRange> ranges;
  const std::uint64_t end = offset + length;
  std::uint64_t position = offset;
  while (position < end) {
    auto data = next_data(position);
    if (!data) return tl::unexpected(data.error());
    if (*data >= end) break;
    auto hole = next_hole(*data);
    if (!hole) return tl::unexpected(hole.error());
    const std::uint64_t stop = std::min(*hole, end);
    if (stop <= *data) break;  // a file that shrank under us
    ranges.push_back({*data, stop - *data});
    position = stop;
  }
  return ranges;
}

Result<void> copy_disk_range(const DiskReader& from, DiskWriter& to, std::uint64_t offset, std::uint64_t length,
                             const std::function<Result<void>(std::uint64_t)>& on_progress) {
  constexpr std::uint64_t chunk = 1024 * 1024;
  constexpr std::size_t block = 4096;
  auto ranges = from.data_ranges(offset, length);
  if (!ranges) return tl::unexpected(ranges.error());
  Bytes buffer(static_cast<std::size_t>(chunk));
  std::uint64_t reported = offset;
  for (const auto& range : *ranges) {
    for (std::uint64_t at = range.offset; at < range.offset + range.length; at += chunk) {
      const std::size_t n = static_cast<std::size_t>(std::min(chunk, range.offset + range.length - at));
      std::span<std::uint8_t> part(buffer.data(), n);
      if (auto ok = from.read_at(at, part); !ok) return ok;
      // Runs of non-zero 4 KiB blocks, each written at once.
      std::size_t run = 0;
      for (std::size_t i = 0; i <= n; i += block) {
        const bool zero = i < n && is_all_zero(ByteView(part).subspan(i, std::min(block, n - i)));
        if (i < n && !zero) continue;
        if (i > run)
          if (auto ok = to.write_at(at + run, ByteView(part).subspan(run, std::min(i, n) - run)); !ok) return ok;
        run = i + block;
      }
      if (auto ok = on_progress(at + n - reported); !ok) return ok;
      reported = at + n;
    }
  }
  if (offset + length > reported)
    if (auto ok = on_progress(offset + length - reported); !ok) return ok;
  return {};
}

Result<void> RawFile::sync() {
  if (::fsync(fd_) != 0) return io_error("cannot flush", path_, errno);
  return {};
}

}  // namespace fde::image
