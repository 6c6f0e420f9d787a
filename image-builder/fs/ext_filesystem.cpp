// ExtFilesystem over libext2fs (e2fsprogs): unix_io's "offset=" option opens a partition
// inside a raw image file; an io_manager of our own reads one through a DiskReader.
#include "image-builder/fs/ext_filesystem.hpp"

#include <ext2fs/ext2fs.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <new>

namespace fde::image {
namespace {

tl::unexpected<Error> ext_error(const std::string& what, errcode_t code) {
  return fail(Errc::io, what + ": " + error_message(code));
}

// A read-only io_manager over a DiskReader and a byte offset. libext2fs opens channels by
// name; the source travels beside the name, in `opening`, for the one open call
// ExtFilesystem::open makes.
struct ReaderSource {
  std::shared_ptr<const DiskReader> disk;
  std::uint64_t offset = 0;
};
thread_local const ReaderSource* opening = nullptr;

errcode_t reader_open(const char* name, int flags, io_channel* channel);
errcode_t reader_close(io_channel channel) {
  if (--channel->refcount > 0) return 0;
  delete[] channel->name;
  delete channel;
  return 0;
}
errcode_t reader_set_blksize(io_channel channel, int blksize) {
  channel->block_size = blksize;
  return 0;
}
errcode_t reader_read_blk64(io_channel channel, unsigned long long block, int count, void* data) {
  const auto* source = static_cast<const ReaderSource*>(channel->private_data);
  const std::uint64_t bytes =
      count < 0 ? static_cast<std::uint64_t>(-static_cast<std::int64_t>(count))
                : static_cast<std::uint64_t>(count) * static_cast<std::uint64_t>(channel->block_size);
  const std::uint64_t at = block * static_cast<std::uint64_t>(channel->block_size);
  if (!source->disk->read_at(source->offset + at,
                             std::span<std::uint8_t>(static_cast<std::uint8_t*>(data), static_cast<std::size_t>(bytes))))
    return EXT2_ET_SHORT_READ;
  return 0;
}
errcode_t reader_read_blk(io_channel channel, unsigned long block, int count, void* data) {
  return reader_read_blk64(channel, block, count, data);
}
errcode_t reader_write_blk64(io_channel, unsigned long long, int, const void*) { return EXT2_ET_RO_FILSYS; }
errcode_t reader_write_blk(io_channel, unsigned long, int, const void*) { return EXT2_ET_RO_FILSYS; }
errcode_t reader_write_byte(io_channel, unsigned long, int, const void*) { return EXT2_ET_RO_FILSYS; }
errcode_t reader_flush(io_channel) { return 0; }
errcode_t reader_set_option(io_channel, const char*, const char*) { return EXT2_ET_INVALID_ARGUMENT; }

struct_io_manager reader_manager = [] {
  struct_io_manager m{};
  m.magic = EXT2_ET_MAGIC_IO_MANAGER;
  m.name = "fde-image DiskReader";
  m.open = reader_open;
  m.close = reader_close;
  m.set_blksize = reader_set_blksize;
  m.read_blk = reader_read_blk;
  m.write_blk = reader_write_blk;
  m.flush = reader_flush;
  m.write_byte = reader_write_byte;
  m.set_option = reader_set_option;
  m.read_blk64 = reader_read_blk64;
  m.write_blk64 = reader_write_blk64;
  return m;
}();

errcode_t reader_open(const char* name, int flags, io_channel* channel) {
  if (!opening || (flags & IO_FLAG_RW)) return EXT2_ET_BAD_DEVICE_NAME;
  auto* made = new (std::nothrow) struct_io_channel{};
  if (!made) return EXT2_ET_NO_MEMORY;
  const std::size_t length = std::strlen(name);
  made->name = new (std::nothrow) char[length + 1];
  if (!made->name) {
    delete made;
    return EXT2_ET_NO_MEMORY;
  }
  std::memcpy(made->name, name, length + 1);
  made->magic = EXT2_ET_MAGIC_IO_CHANNEL;
  made->manager = &reader_manager;
  made->block_size = 1024;
  made->refcount = 1;
  made->private_data = const_cast<ReaderSource*>(opening);
  *channel = made;
  return 0;
}

}  // namespace

struct ExtFilesystem::State {
  ext2_filsys fs = nullptr;
  bool writable = false;
  std::unique_ptr<ReaderSource> source;  // a filesystem read through a DiskReader
  ~State() {
    if (fs) ext2fs_close_free(&fs);
  }
};

ExtFilesystem::ExtFilesystem(std::unique_ptr<State> state) : state_(std::move(state)) {}
ExtFilesystem::~ExtFilesystem() = default;
ExtFilesystem::ExtFilesystem(ExtFilesystem&&) noexcept = default;
ExtFilesystem& ExtFilesystem::operator=(ExtFilesystem&&) noexcept = default;

Result<bool> has_ext_magic(const DiskReader& disk, std::uint64_t offset) {
  auto size = disk.size();
  if (!size) return tl::unexpected(size.error());
  if (offset > *size || *size - offset < 1024 + 58) return false;
  std::array<std::uint8_t, 2> magic{};
  if (auto ok = disk.read_at(offset + 1024 + 56, magic); !ok) return tl::unexpected(ok.error());
  return magic[0] == 0x53 && magic[1] == 0xEF;
}

Result<ExtFilesystem> ExtFilesystem::open(std::shared_ptr<const DiskReader> disk, std::uint64_t offset) {
  initialize_ext2_error_table();
  auto state = std::make_unique<State>();
  state->source = std::make_unique<ReaderSource>(ReaderSource{std::move(disk), offset});
  opening = state->source.get();
  const errcode_t err = ext2fs_open2("disk", nullptr, EXT2_FLAG_64BITS, 0, 0, &reader_manager, &state->fs);
  opening = nullptr;
  if (err) return ext_error("cannot open the ext filesystem at byte " + std::to_string(offset), err);
  return ExtFilesystem(std::move(state));
}

Result<ExtFilesystem> ExtFilesystem::open(const std::string& image_path, std::uint64_t offset, bool writable) {
  initialize_ext2_error_table();
  auto state = std::make_unique<State>();
  state->writable = writable;
  const std::string io_options = "offset=" + std::to_string(offset);
  int flags = EXT2_FLAG_64BITS | EXT2_FLAG_THREADS;
  if (writable) flags |= EXT2_FLAG_RW;
  const errcode_t err = ext2fs_open2(image_path.c_str(), io_options.c_str(), flags, 0, 0, unix_io_manager, &state->fs);
  if (err) return ext_error("cannot open the ext filesystem at byte " + std::to_string(offset), err);
  return ExtFilesystem(std::move(state));
}

std::string ExtFilesystem::uuid() const {
  const auto* u = state_->fs->super->s_uuid;
  char text[40];
  std::snprintf(text, sizeof text, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
  return text;
}

std::string ExtFilesystem::label() const {
  const auto* raw = reinterpret_cast<const char*>(state_->fs->super->s_volume_name);
  return std::string(raw, strnlen(raw, sizeof state_->fs->super->s_volume_name));
}

std::uint32_t ExtFilesystem::block_size() const { return static_cast<std::uint32_t>(state_->fs->blocksize); }

std::uint64_t ExtFilesystem::size_bytes() const {
  return ext2fs_blocks_count(state_->fs->super) * state_->fs->blocksize;
}

bool ExtFilesystem::needs_recovery() const {
  return ext2fs_has_feature_journal_needs_recovery(state_->fs->super) != 0;
}

namespace {

// The journal inode's blocks after its superblock, when the journal is clean: nothing in
// them is read before it is written again.
Result<void> unmark_clean_journal(ext2_filsys fs, ext2fs_block_bitmap map) {
  const ext2_ino_t ino = fs->super->s_journal_inum;
  if (!ext2fs_has_feature_journal(fs->super) || ino == 0 || ext2fs_has_feature_journal_needs_recovery(fs->super))
    return {};
  blk64_t first = 0;
  if (ext2fs_bmap2(fs, ino, nullptr, nullptr, 0, 0, nullptr, &first) != 0 || first == 0) return {};
  std::vector<std::uint8_t> block(fs->blocksize);
  if (errcode_t err = io_channel_read_blk64(fs->io, first, 1, block.data()))
    return ext_error("cannot read the journal superblock", err);
  // jbd2 superblock: magic c03b3998, and s_start (big-endian, at byte 28) 0 when there is
  // nothing to replay.
  if (load_be32(&block[0]) != 0xc03b3998u || load_be32(&block[28]) != 0) return {};
  struct Walk {
    ext2fs_block_bitmap map;
  } walk{map};
  auto visit = [](ext2_filsys, blk64_t* blocknr, e2_blkcnt_t blockcnt, blk64_t, int, void* priv) -> int {
    if (blockcnt >= 1) ext2fs_unmark_block_bitmap2(static_cast<Walk*>(priv)->map, *blocknr);
    return 0;
  };
  if (errcode_t err = ext2fs_block_iterate3(fs, ino, BLOCK_FLAG_READ_ONLY | BLOCK_FLAG_DATA_ONLY, nullptr, visit, &walk))
    return ext_error("cannot walk the journal's blocks", err);
  return {};
}

// Inode-table blocks past each group's high-water mark, when the group descriptors carry
// checksums (which is what makes the kernel and e2fsck trust bg_itable_unused) and the group
// does not claim a zeroed table (no INODE_ZEROED flag: the kernel's lazy init zeroes those
// blocks itself after the first mount, as it does after mke2fs -E lazy_itable_init=1).
void unmark_unused_inode_tables(ext2_filsys fs, ext2fs_block_bitmap map) {
  if (!ext2fs_has_group_desc_csum(fs)) return;
  const std::uint64_t inode_size = EXT2_INODE_SIZE(fs->super);
  const std::uint64_t per_group = fs->super->s_inodes_per_group;
  for (dgrp_t g = 0; g < fs->group_desc_count; ++g) {
    if (!ext2fs_group_desc_csum_verify(fs, g) || ext2fs_bg_flags_test(fs, g, EXT2_BG_INODE_ZEROED)) continue;
    const std::uint64_t unused = ext2fs_bg_flags_test(fs, g, EXT2_BG_INODE_UNINIT) ? per_group
                                                                                  : ext2fs_bg_itable_unused(fs, g);
    if (unused > per_group) continue;
    const std::uint64_t used_blocks = ((per_group - unused) * inode_size + fs->blocksize - 1) / fs->blocksize;
    const blk64_t table = ext2fs_inode_table_loc(fs, g);
    if (table == 0 || used_blocks >= fs->inode_blocks_per_group) continue;
    ext2fs_unmark_block_bitmap_range2(map, table + used_blocks,
                                      static_cast<unsigned int>(fs->inode_blocks_per_group - used_blocks));
  }
}

}  // namespace

Result<std::vector<ByteExtent>> ExtFilesystem::live_extents(std::uint64_t granularity) const {
  ext2_filsys fs = state_->fs;
  if (errcode_t err = ext2fs_read_block_bitmap(fs)) return ext_error("cannot read the block bitmaps", err);
  ext2fs_block_bitmap live = nullptr;
  if (errcode_t err = ext2fs_copy_bitmap(fs->block_map, &live)) return ext_error("cannot copy the block bitmap", err);
  struct Free {
    ext2fs_block_bitmap map;
    ~Free() { ext2fs_free_block_bitmap(map); }
  } free_live{live};
  if (auto ok = unmark_clean_journal(fs, live); !ok) return tl::unexpected(ok.error());
  unmark_unused_inode_tables(fs, live);
  const std::uint64_t block = fs->blocksize;
  const blk64_t first = fs->super->s_first_data_block;
  const blk64_t last = ext2fs_blocks_count(fs->super) - 1;
  std::vector<ByteExtent> extents;
  auto add = [&](std::uint64_t begin, std::uint64_t end) {
    begin = begin / granularity * granularity;
    end = (end + granularity - 1) / granularity * granularity;
    if (!extents.empty() && extents.back().offset + extents.back().length >= begin)
      extents.back().length = std::max(extents.back().length, end - extents.back().offset);
    else
      extents.push_back({begin, end - begin});
  };
  // Everything before the first data block (boot sector and, with 1 KiB blocks, the
  // superblock) is not in the bitmap but belongs to the filesystem.
  add(0, std::max<std::uint64_t>((first + 1) * block, 4096));
  blk64_t at = first;
  while (at <= last) {
    blk64_t set_start = 0;
    if (ext2fs_find_first_set_block_bitmap2(live, at, last, &set_start) != 0) break;
    blk64_t zero_start = 0;
    blk64_t run_end = last + 1;
    if (set_start < last && ext2fs_find_first_zero_block_bitmap2(live, set_start + 1, last, &zero_start) == 0)
      run_end = zero_start;
    add(set_start * block, run_end * block);
    at = run_end;
  }
  // Rounding out may pass the end of a filesystem whose size is not a multiple of the
  // granularity; the caller checks that the partition has room for that.
  return extents;
}

Result<std::uint32_t> ExtFilesystem::lookup(const std::string& path) const {
  ext2_ino_t ino = 0;
  const errcode_t err = ext2fs_namei(state_->fs, EXT2_ROOT_INO, EXT2_ROOT_INO, path.c_str(), &ino);
  if (err == EXT2_ET_FILE_NOT_FOUND) return fail(Errc::not_found, path + ": not found");
  if (err) return ext_error("cannot look up " + path, err);
  return ino;
}

Result<bool> ExtFilesystem::exists(const std::string& path) const {
  auto ino = lookup(path);
  if (ino) return true;
  if (ino.error().code == Errc::not_found) return false;
  return tl::unexpected(ino.error());
}

Result<std::vector<ExtDirEntry>> ExtFilesystem::list_directory(const std::string& path) const {
  auto ino = lookup(path);
  if (!ino) return tl::unexpected(ino.error());
  struct Context {
    ExtFilesystem::State* state;
    std::vector<ExtDirEntry> entries;
  } context{state_.get(), {}};
  auto callback = [](ext2_ino_t, int, struct ext2_dir_entry* dirent, int, int, char*, void* priv) -> int {
    auto* ctx = static_cast<Context*>(priv);
    const int length = ext2fs_dirent_name_len(dirent);
    std::string name(dirent->name, static_cast<std::size_t>(length));
    if (name == "." || name == "..") return 0;
    ExtDirEntry entry;
    entry.name = std::move(name);
    const int type = ext2fs_dirent_file_type(dirent);
    entry.is_directory = type == EXT2_FT_DIR;
    entry.is_regular = type == EXT2_FT_REG_FILE;
    ctx->entries.push_back(std::move(entry));
    return 0;
  };
  const errcode_t err = ext2fs_dir_iterate2(state_->fs, *ino, 0, nullptr, callback, &context);
  if (err) return ext_error("cannot list " + path, err);
  std::sort(context.entries.begin(), context.entries.end(),
            [](const ExtDirEntry& a, const ExtDirEntry& b) { return a.name < b.name; });
  return context.entries;
}

Result<Bytes> ExtFilesystem::read_file(const std::string& path, std::uint64_t max_size) const {
  auto ino = lookup(path);
  if (!ino) return tl::unexpected(ino.error());
  ext2_file_t file = nullptr;
  if (errcode_t err = ext2fs_file_open(state_->fs, *ino, 0, &file)) return ext_error("cannot open " + path, err);
  __u64 size = 0;
  ext2fs_file_get_lsize(file, &size);
  if (size > max_size) {
    ext2fs_file_close(file);
    return fail(Errc::too_large, path + " is larger than " + std::to_string(max_size) + " bytes");
  }
  Bytes data(static_cast<std::size_t>(size));
  std::size_t done = 0;
  while (done < data.size()) {
    unsigned int got = 0;
    const auto want = static_cast<unsigned int>(std::min<std::size_t>(data.size() - done, 1u << 20));
    if (errcode_t err = ext2fs_file_read(file, data.data() + done, want, &got)) {
      ext2fs_file_close(file);
      return ext_error("cannot read " + path, err);
    }
    if (got == 0) break;
    done += got;
  }
  ext2fs_file_close(file);
  if (done != data.size()) return fail(Errc::io, path + ": short read");
  return data;
}

namespace {

// Writes all of `data` at `offset` of an open file, in chunks of at most 1 MiB.
errcode_t write_at(ext2_file_t file, std::uint64_t offset, ByteView data) {
  errcode_t err = ext2fs_file_llseek(file, offset, EXT2_SEEK_SET, nullptr);
  std::size_t done = 0;
  while (!err && done < data.size()) {
    unsigned int written = 0;
    const auto want = static_cast<unsigned int>(std::min<std::size_t>(data.size() - done, 1u << 20));
    err = ext2fs_file_write(file, data.data() + done, want, &written);
    done += written;
  }
  return err;
}

}  // namespace

Result<void> ExtFilesystem::append_to_file(const std::string& path, ByteView data) {
  if (!state_->writable) return fail(Errc::internal, "filesystem opened read-only");
  auto ino = lookup(path);
  if (!ino) return tl::unexpected(ino.error());
  ext2_file_t file = nullptr;
  if (errcode_t err = ext2fs_file_open(state_->fs, *ino, EXT2_FILE_WRITE, &file))
    return ext_error("cannot open " + path + " for writing", err);
  __u64 size = 0;
  ext2fs_file_get_lsize(file, &size);
  const errcode_t err = write_at(file, size, data);
  const errcode_t close_err = ext2fs_file_close(file);
  if (err == EXT2_ET_BLOCK_ALLOC_FAIL)
    return fail(Errc::io, "no space left on the boot filesystem to extend " + path);
  if (err) return ext_error("cannot append to " + path, err);
  if (close_err) return ext_error("cannot write " + path, close_err);
  return {};
}

Result<void> ExtFilesystem::replace_file(const std::string& path, ByteView data) {
  if (!state_->writable) return fail(Errc::internal, "filesystem opened read-only");
  auto ino = lookup(path);
  if (!ino) return tl::unexpected(ino.error());
  ext2_file_t file = nullptr;
  if (errcode_t err = ext2fs_file_open(state_->fs, *ino, EXT2_FILE_WRITE, &file))
    return ext_error("cannot open " + path + " for writing", err);
  // Overwrite from the start, then cut what is left of the old content (truncating first
  // and writing into the freed blocks leaves libext2fs's bitmap inconsistent).
  errcode_t err = write_at(file, 0, data);
  if (!err) err = ext2fs_file_flush(file);
  if (!err) err = ext2fs_file_set_size2(file, data.size());
  const errcode_t close_err = ext2fs_file_close(file);
  if (err == EXT2_ET_BLOCK_ALLOC_FAIL) return fail(Errc::io, "no space left on the boot filesystem to write " + path);
  if (err) return ext_error("cannot write " + path, err);
  if (close_err) return ext_error("cannot write " + path, close_err);
  return {};
}

Result<void> ExtFilesystem::close() {
  if (!state_ || !state_->fs) return {};
  const errcode_t err = ext2fs_close_free(&state_->fs);
  if (err) return ext_error("cannot write the ext filesystem", err);
  return {};
}

}  // namespace fde::image
