// BackgroundWriter: one thread, a bounded queue, recycled buffers.
#include "image-builder/disk/background_writer.hpp"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <new>
#include <utility>

#include "image-builder/disk/raw_file.hpp"

namespace fde::image {

AlignedBuffer::AlignedBuffer(std::size_t size) : size_(size) {
  constexpr std::size_t alignment = RawFile::direct_alignment;
  // Rounding up must not wrap around to a small allocation that size() would overstate.
  if (size > std::numeric_limits<std::size_t>::max() - (alignment - 1)) throw std::bad_alloc();
  const std::size_t rounded = (size + alignment - 1) / alignment * alignment;
  data_.reset(static_cast<std::uint8_t*>(std::aligned_alloc(alignment, std::max(rounded, alignment))));
  if (!data_) throw std::bad_alloc();
}

AlignedBuffer::AlignedBuffer(AlignedBuffer&& other) noexcept
    : data_(std::move(other.data_)), size_(std::exchange(other.size_, 0)) {}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& other) noexcept {
  data_ = std::move(other.data_);
  size_ = std::exchange(other.size_, 0);
  return *this;
}

void AlignedBuffer::Free::operator()(std::uint8_t* p) const { std::free(p); }

BackgroundWriter::BackgroundWriter(DiskWriter& target, std::size_t buffer_size, std::size_t depth) : target_(target) {
  for (std::size_t i = 0; i < depth; ++i) free_.emplace_back(buffer_size);
  thread_ = std::thread([this] { run(); });
}

BackgroundWriter::~BackgroundWriter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

std::optional<AlignedBuffer> BackgroundWriter::take_buffer() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] { return !free_.empty() || error_; });
  if (error_) return std::nullopt;
  AlignedBuffer buffer = std::move(free_.back());
  free_.pop_back();
  return buffer;
}

void BackgroundWriter::submit(std::uint64_t offset, AlignedBuffer buffer, std::size_t length) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(Job{offset, std::move(buffer), length});
  }
  changed_.notify_all();
}

Result<void> BackgroundWriter::finish() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] { return (queue_.empty() && !busy_) || error_; });
  if (error_) return tl::unexpected(*error_);
  return {};
}

void BackgroundWriter::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return !queue_.empty() || stopping_; });
    if (queue_.empty()) return;  // stopping, nothing left
    Job job = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    std::optional<Error> failed;
    if (!error_) {
      lock.unlock();
      auto ok = target_.write_at(job.offset, ByteView(job.buffer.data(), job.length));
      if (!ok) failed = ok.error();
      lock.lock();
    }
    if (failed && !error_) error_ = std::move(*failed);
    free_.push_back(std::move(job.buffer));
    busy_ = false;
    changed_.notify_all();
  }
}

}  // namespace fde::image
