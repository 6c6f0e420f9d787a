// Classifies grub/UEFI events into the measurements reference values pin (section d.4).
#include "common/eventlog/firmware_events.hpp"

#include <algorithm>

namespace fde::eventlog {

namespace {

enum class IplKind { command, kernel_cmdline, grub_cfg, kernel, initramfs, other };

struct ClassifiedIpl {
  IplKind kind = IplKind::other;
  std::string_view text;  // prefix removed for command / kernel_cmdline
};

// The last path component of a grub file name such as "(hd0,gpt1)/EFI/openEuler/grub.cfg".
std::string_view base_name(std::string_view path) {
  auto slash = path.find_last_of("/)");
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

ClassifiedIpl classify_ipl(std::string_view text) {
  // String measurements first: their text can contain "/vmlinuz-" or "grub.cfg" (e.g.
  // "grub_cmd: linux /vmlinuz-6.6.0 ..."), which is what makes the sample's substring
  // matching fragile (d.4).
  if (text.starts_with(grub_command_prefix))
    return {IplKind::command, text.substr(grub_command_prefix.size())};
  if (text.starts_with(kernel_cmdline_prefix))
    return {IplKind::kernel_cmdline, text.substr(kernel_cmdline_prefix.size())};
  if (text.starts_with(module_cmdline_prefix)) return {IplKind::other, text};
  // grub names a loaded file by the path it opened: "(device)/path" or "/path". Anything
  // else (shim's "MokList", other loaders' tags) is not a file we pin.
  if (text.empty() || (text.front() != '(' && text.front() != '/')) return {IplKind::other, text};
  std::string_view name = base_name(text);
  if (name == "grub.cfg") return {IplKind::grub_cfg, text};
  if (name.starts_with("vmlinuz")) return {IplKind::kernel, text};
  if (name.starts_with("initramfs-") || name.starts_with("initrd"))
    return {IplKind::initramfs, text};
  return {IplKind::other, text};
}

// EV_IPL data written by grub is the string plus one NUL (d.4).
std::string_view event_text(const Bytes& data) {
  std::string_view text = as_text(data);
  if (!text.empty() && text.back() == '\0') text.remove_suffix(1);
  return text;
}

}  // namespace

bool string_digest_matches(crypto::HashAlg alg, std::string_view prefix, std::string_view text,
                           ByteView digest) {
  const Bytes plain = crypto::digest(alg, as_bytes(text));
  if (plain.size() == digest.size() && std::equal(plain.begin(), plain.end(), digest.begin()))
    return true;
  const Bytes prefixed = crypto::digest_parts(alg, {as_bytes(prefix), as_bytes(text)});
  return prefixed.size() == digest.size() &&
         std::equal(prefixed.begin(), prefixed.end(), digest.begin());
}

Result<FirmwareEvents> extract_firmware_events(const EventLog& log, crypto::HashAlg alg) {
  const std::uint16_t id = tpm_alg_id(alg);
  if (!log.has_algorithm(id))
    return fail(Errc::unsupported,
                "event log: no " + std::string(crypto::hash_alg_name(alg)) + " digests");
  FirmwareEvents out;
  for (const Event& event : log.events) {
    if (!is_extended(event)) continue;
    const Bytes* digest = event.digest_for(id);
    if (digest == nullptr)
      return fail(Errc::malformed, "event log: a record lacks its " +
                                       std::string(crypto::hash_alg_name(alg)) + " digest");
    if (event.event_type == ev_efi_boot_services_application) {
      // Section d.4: the digest is the PE/COFF Authenticode hash of the loaded application.
      out.boot_applications.push_back(*digest);
      continue;
    }
    if (event.event_type != ev_ipl) continue;
    ClassifiedIpl ipl = classify_ipl(event_text(event.data));
    MeasuredString measured{std::string(ipl.text), *digest};
    switch (ipl.kind) {
      case IplKind::command:
        out.grub_commands.push_back(std::move(measured));
        break;
      case IplKind::kernel_cmdline:
        if (!out.kernel_cmdline) out.kernel_cmdline = measured;
        out.kernel_cmdlines.push_back(std::move(measured));
        break;
      case IplKind::grub_cfg:
        if (!out.grub_cfg) out.grub_cfg = measured;
        out.grub_cfgs.push_back(std::move(measured));
        break;
      case IplKind::kernel:
        if (!out.kernel) out.kernel = measured;
        out.kernels.push_back(std::move(measured));
        break;
      case IplKind::initramfs:
        if (!out.initramfs) out.initramfs = measured;
        out.initramfses.push_back(std::move(measured));
        break;
      case IplKind::other:
        break;
    }
  }
  return out;
}

}  // namespace fde::eventlog
