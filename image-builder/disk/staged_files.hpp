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

  // fsyncs each file and links it to its final name (an existing name fails: never replaced),
  // then removes the .partial names. On failure no final name is left.
  Result<void> publish();

 private:
  struct Entry {
    std::string final_path;
    RawFile file;
    bool published = false;
  };
  std::vector<std::unique_ptr<Entry>> entries_;
};

// Whether `path` (not followed if a symlink) is the file open as `fd`.
bool names_file(const std::string& path, int fd);

}  // namespace fde::image
