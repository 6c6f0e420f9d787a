// Writes to a DiskWriter on a thread of its own, so that reading and encrypting the next
// chunk overlaps with writing this one. Buffers circulate: take_buffer() hands out a free one
// (waiting while `depth` are queued), submit() queues it. The target is used by the writer
// thread only, in submission order, until finish() returns.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "image-builder/disk/disk_io.hpp"

namespace fde::image {

// A heap buffer whose start is aligned for direct I/O (RawFile::direct_alignment); its
// contents start undefined. A size too large to round up to the alignment throws bad_alloc;
// a moved-from buffer is empty (no data, size 0).
class AlignedBuffer {
 public:
  explicit AlignedBuffer(std::size_t size);
  AlignedBuffer(AlignedBuffer&& other) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;
  std::uint8_t* data() { return data_.get(); }
  const std::uint8_t* data() const { return data_.get(); }
  std::size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(std::uint8_t* p) const;
  };
  std::unique_ptr<std::uint8_t, Free> data_;
  std::size_t size_ = 0;
};

class BackgroundWriter {
 public:
  BackgroundWriter(DiskWriter& target, std::size_t buffer_size, std::size_t depth = 3);
  ~BackgroundWriter();  // waits for the queue (errors then go unreported: call finish())
  BackgroundWriter(const BackgroundWriter&) = delete;
  BackgroundWriter& operator=(const BackgroundWriter&) = delete;

  // A buffer of buffer_size bytes to fill, aligned for direct I/O; nullopt once a write has
  // failed (finish() says why).
  std::optional<AlignedBuffer> take_buffer();
  // Queues `length` bytes of `buffer` for `offset`.
  void submit(std::uint64_t offset, AlignedBuffer buffer, std::size_t length);
  // Waits until every queued write is done; the first error, if any.
  Result<void> finish();

 private:
  struct Job {
    std::uint64_t offset = 0;
    AlignedBuffer buffer;
    std::size_t length = 0;
  };
  void run();

  DiskWriter& target_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Job> queue_;
  std::vector<AlignedBuffer> free_;
  std::optional<Error> error_;
  bool busy_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace fde::image
