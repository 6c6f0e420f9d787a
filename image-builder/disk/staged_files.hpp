// Output files that appear under their names only when everything succeeded. Each is created
// new as NAME.partial (O_EXCL|O_NOFOLLOW: a name someone planted there, a symlink included,
// is an error and is left alone), written through its descriptor, and finally linked to NAME
// by that descriptor, so neither a planted symlink nor a file swapped in under the .partial
// name is ever written through or published.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "image-builder/disk/raw_file.hpp"

namespace fde::image {

class StagedFiles {
 public:
  StagedFiles() = default;
  StagedFiles(const StagedFiles&) = delete;
  StagedFiles& operator=(const StagedFiles&) = delete;
  // Removes every .partial name that still names a file created here; names that now point
  // elsewhere are not touched.
  ~StagedFiles();

  // Creates `final_path`.partial with exactly `permissions`. The file stays open, owned here.
  Result<RawFile*> create(const std::string& final_path, mode_t permissions);

  // Like create, for a file that is to take the place of an existing one: publish renames
  // `final_path`.partial over `final_path`, and only while `final_path` still names the file
  // open as `current_fd` (checked just before; a name swapped meanwhile fails the publish).
  Result<RawFile*> create_replacing(const std::string& final_path, mode_t permissions, int current_fd);

  // fsyncs each file and links it to its final name (an existing name fails: never replaced),
  // then renames the replacing ones into place, then removes the .partial names. On failure
  // no new final name is left and no replaced file is touched.
  Result<void> publish();

 private:
  struct Entry {
    std::string final_path;
    RawFile file;
    bool published = false;
    int replaces_fd = -1;  // create_replacing: the file final_path must still name
  };
  std::vector<std::unique_ptr<Entry>> entries_;
};

// Whether `path` (not followed if a symlink) is the file open as `fd`.
bool names_file(const std::string& path, int fd);

}  // namespace fde::image
