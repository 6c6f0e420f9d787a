// StagedFiles: create new, write by descriptor, publish by descriptor (linkat of
// /proc/self/fd/N, which links the open file itself, not whatever its name now holds).
#include "image-builder/disk/staged_files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

namespace fde::image {

bool names_file(const std::string& path, int fd) {
  struct stat named {}, open {};
  if (::lstat(path.c_str(), &named) != 0 || ::fstat(fd, &open) != 0) return false;
  return named.st_dev == open.st_dev && named.st_ino == open.st_ino;
}

namespace {

std::string partial_name(const std::string& final_path) { return final_path + ".partial"; }

void remove_if_ours(const std::string& path, int fd) {
  if (names_file(path, fd)) ::unlink(path.c_str());
}

}  // namespace

StagedFiles::~StagedFiles() {
  for (const auto& entry : entries_) remove_if_ours(partial_name(entry->final_path), entry->file.fd());
}

Result<RawFile*> StagedFiles::create(const std::string& final_path, mode_t permissions) {
  auto file = RawFile::create(partial_name(final_path), permissions);
  if (!file) return tl::unexpected(file.error());
  auto entry = std::make_unique<Entry>();
  entry->final_path = final_path;
  entry->file = std::move(*file);
  entries_.push_back(std::move(entry));
  return &entries_.back()->file;
}

Result<RawFile*> StagedFiles::create_replacing(const std::string& final_path, mode_t permissions, int current_fd) {
  auto file = create(final_path, permissions);
  if (!file) return file;
  entries_.back()->replaces_fd = current_fd;
  return file;
}

Result<void> StagedFiles::publish() {
  for (auto& entry : entries_)
    if (auto ok = entry->file.sync(); !ok) return ok;
  auto undo = [&] {
    for (auto& done : entries_)
      if (done->published && done->replaces_fd < 0) {
        remove_if_ours(done->final_path, done->file.fd());
        done->published = false;
      }
  };
  for (auto& entry : entries_) {
    if (entry->replaces_fd >= 0) continue;  // after every new name is in place
    // Without AT_SYMLINK_FOLLOW linkat would link the /proc magic link itself.
    if (::linkat(AT_FDCWD, entry->file.fd_path().c_str(), AT_FDCWD, entry->final_path.c_str(), AT_SYMLINK_FOLLOW) !=
        0) {
      const int err = errno;
      undo();
      if (err == EEXIST)
        return fail(Errc::io, entry->final_path + " appeared while fde-image ran; it is not replaced");
      return fail(Errc::io, "cannot create " + entry->final_path + ": " + std::strerror(err) +
                                (err == ENOENT ? " (is /proc mounted?)" : ""));
    }
    entry->published = true;
  }
  for (auto& entry : entries_) {
    if (entry->replaces_fd < 0) continue;
    const std::string partial = partial_name(entry->final_path);
    if (!names_file(entry->final_path, entry->replaces_fd) || !names_file(partial, entry->file.fd())) {
      undo();
      return fail(Errc::io, entry->final_path + " or " + partial + " changed while fde-image ran; nothing is replaced");
    }
    if (::rename(partial.c_str(), entry->final_path.c_str()) != 0) {
      const int err = errno;
      undo();
      return fail(Errc::io, "cannot replace " + entry->final_path + ": " + std::strerror(err));
    }
    entry->published = true;
  }
  for (auto& entry : entries_) remove_if_ours(partial_name(entry->final_path), entry->file.fd());
  // The new names are durable only once their directories are: a crash now must not lose
  // an image whose data is already on disk.
  std::set<std::string> directories;
  for (auto& entry : entries_) {
    const auto slash = entry->final_path.rfind('/');
    directories.insert(slash == std::string::npos ? std::string(".")
                                                  : slash == 0 ? std::string("/") : entry->final_path.substr(0, slash));
  }
  for (const auto& directory : directories) {
    const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) {
      const int err = errno;
      if (fd >= 0) ::close(fd);
      return fail(Errc::io, "published, but cannot flush the directory " + directory + ": " + std::strerror(err));
    }
    ::close(fd);
  }
  return {};
}

}  // namespace fde::image
