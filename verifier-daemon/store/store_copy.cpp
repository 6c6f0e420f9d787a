// copy_store(): one store's content into another backend, checked after the copy.
#include "verifier-daemon/store/store.hpp"

namespace fde::verifier {

Result<StoreCopyReport> copy_store(Store& source, Store& target) {
  auto before = source.verify_audit_chain();
  if (!before) return fail_with_context("source store", before.error());
  if (!before->intact)
    return fail(Errc::verification_failed, "the source store's audit chain does not verify (" + before->problem +
                                               "); nothing copied");
  auto content = source.export_content();
  if (!content) return fail_with_context("source store", content.error());
  if (static_cast<std::int64_t>(content->audit.size()) != before->records ||
      (before->records > 0 && content->audit.back().hash != before->head.hash))
    return fail(Errc::io, "the source store changed during the copy (stop the daemons first); nothing copied");
  if (auto ok = target.import_content(*content); !ok) return fail_with_context("target store", ok.error());

  StoreCopyReport report;
  report.images = content->images.size();
  auto after = target.verify_audit_chain(before->head);
  if (!after) return fail_with_context("target store", after.error());
  if (!after->intact || after->records != before->records || after->head.hash != before->head.hash)
    return fail(Errc::verification_failed, "the copied audit chain does not verify in the target: " + after->problem);
  report.records = after->records;
  report.head = after->head;
  for (const auto& stored : content->images) {
    const std::string& id = stored.image.image_id;
    auto original = source.disk_key(id);
    auto copied = target.disk_key(id);
    if (!original) return fail_with_context("source store: image " + id, original.error());
    if (!copied) return fail_with_context("target store: image " + id, copied.error());
    if (original->has_value() != copied->has_value() ||
        (original->has_value() && !equal_constant_time((*original)->view(), (*copied)->view())))
      return fail(Errc::verification_failed, "target store: the key of image " + id + " does not unwrap as in the source");
    if (copied->has_value()) ++report.active_keys_checked;
  }
  return report;
}

}  // namespace fde::verifier
