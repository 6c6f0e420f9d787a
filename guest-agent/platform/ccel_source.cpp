// CCEL table and log area from sysfs.
#include "guest-agent/platform/ccel_source.hpp"

#include <sys/stat.h>

#include "common/eventlog/ccel.hpp"
#include "common/protocol/messages.hpp"
#include "common/util/file.hpp"

namespace fde::agent {

Result<std::optional<BootEventLog>> CcelSource::read() const {
  struct stat st {};
  if (::stat(table_path.c_str(), &st) != 0) return std::optional<BootEventLog>{};
  auto table = read_file(table_path, protocol::max_ccel_table_size);
  if (!table) return fail_with_context("CCEL table", table.error());
  // The verifier checks the table too; checking here turns a broken firmware table into a
  // clear local message instead of a remote denial.
  if (auto parsed = eventlog::parse_ccel_table(*table); !parsed) return fail_with_context("CCEL table", parsed.error());
  // sysfs reports size 0 for the log file; read_file stops at the limit either way.
  auto log = read_file(log_path, protocol::max_event_log_size);
  if (!log) return fail_with_context("CCEL event log", log.error());
  return std::optional<BootEventLog>{BootEventLog{std::move(*table), std::move(*log)}};
}

}  // namespace fde::agent
