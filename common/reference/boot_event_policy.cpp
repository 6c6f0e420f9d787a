// The grub-boot allow-list (docs/reference-values.md, "The allow-list").
#include "common/reference/boot_event_policy.hpp"

#include <algorithm>
#include <array>
#include <optional>
#include <string_view>

#include "common/eventlog/event_types.hpp"
#include "common/reference/digest_lists.hpp"
#include "common/util/words.hpp"
#include "common/eventlog/firmware_events.hpp"

namespace fde::reference {

namespace {

using eventlog::Event;
using eventlog::MeasuredString;

bool equal(ByteView a, ByteView b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

bool is_digest_of(crypto::HashAlg alg, ByteView data, ByteView digest) {
  return equal(crypto::digest(alg, data), digest);
}

std::string_view ipl_text(const Bytes& data) {
  std::string_view text = as_text(data);
  if (!text.empty() && text.back() == '\0') text.remove_suffix(1);
  return text;
}

// Event text for a verdict: control characters escaped, at most 96 characters.
std::string excerpt(std::string_view text) {
  constexpr std::size_t limit = 96;
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < limit; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c >= 0x7f) {
      static constexpr char digits[] = "0123456789abcdef";
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > limit) out += "...";
  return out;
}

std::string quoted(std::string_view text) { return "\"" + excerpt(text) + "\""; }

constexpr std::array<std::string_view, 5> known_efi_actions = {
    "Calling EFI Application from Boot Option",
    "Returning from EFI Application from Boot Option",
    "Exit Boot Services Invocation",
    "Exit Boot Services Returned with Success",
    "Exit Boot Services Returned with Failure",
};

// shim measures its MOK databases as EV_IPL with the variable's name as the event data.
constexpr std::array<std::string_view, 3> shim_mok_names = {"MokList", "MokListX",
                                                            "MokListTrusted"};

bool is_zero_separator(crypto::HashAlg alg, const Event& e, ByteView digest) {
  static constexpr std::uint8_t zero[4] = {0, 0, 0, 0};
  return e.data.size() == 4 && std::all_of(e.data.begin(), e.data.end(), [](auto b) { return b == 0; }) &&
         is_digest_of(alg, ByteView(zero, 4), digest);
}

bool is_known_action(crypto::HashAlg alg, const Event& e, ByteView digest) {
  const std::string_view text = as_text(e.data);
  return std::find(known_efi_actions.begin(), known_efi_actions.end(), text) !=
             known_efi_actions.end() &&
         is_digest_of(alg, e.data, digest);
}

bool is_configuration_event(std::uint32_t type) {
  using namespace eventlog;
  switch (type) {
    case ev_efi_variable_driver_config:
    case ev_efi_variable_boot:
    case ev_efi_variable_boot2:
    case ev_efi_variable_authority:
    case ev_efi_handoff_tables:
    case ev_efi_handoff_tables2:
    case ev_platform_config_flags:
    case ev_table_of_devices:
    // TDX-style firmware measures its configuration firmware volume (the variable store)
    // into the first runtime register, which is REM[0] here.
    case ev_efi_platform_firmware_blob:
    case ev_efi_platform_firmware_blob2:
      return true;
    default:
      return false;
  }
}

bool is_driver_event(std::uint32_t type) {
  using namespace eventlog;
  return type == ev_efi_boot_services_driver || type == ev_efi_runtime_services_driver ||
         type == ev_efi_platform_firmware_blob || type == ev_efi_platform_firmware_blob2;
}

// The grub binary's own (embedded) configuration runs before the first grub.cfg it reads:
// Debian's signed grub tests for its prefix, searches for a root and sources grub.cfg. The
// binary is pinned by its Authenticode digest, but a host that makes that configuration
// fail reaches a grub shell before any grub.cfg, so what runs there is limited to
// side-effect-free tests, locating the root/prefix and reading a grub.cfg. Returns why a
// command is refused, or nullopt.
std::optional<std::string> prelude_refusal(std::string_view command) {
  const auto words = split_on_blanks(command);
  if (words.empty()) return "an empty command";
  const std::string& name = words.front();
  if (name == "[" || name == "test") return std::nullopt;
  if (name == "set") {
    if (words.size() == 2 && (words[1].starts_with("root=") || words[1].starts_with("prefix=")))
      return std::nullopt;
    return "only \"set root=...\" and \"set prefix=...\" may run before grub.cfg";
  }
  if (name == "source" || name == "configfile") {
    if (words.size() == 2 && words[1].ends_with("/grub.cfg")) return std::nullopt;
    return "\"" + std::string(name) + "\" may only read a grub.cfg before the first grub.cfg";
  }
  if (name == "search" || name.starts_with("search.")) {
    for (std::size_t i = 1; i < words.size(); ++i) {
      if (words[i].starts_with("--set=") && words[i] != "--set=root")
        return "search may only set \"root\"";
      if ((words[i] == "--set" || words[i] == "-s") && i + 1 < words.size() && words[i + 1] != "root")
        return "search may only set \"root\"";
    }
    // search.fs_uuid / search.file / search.fs_label NAME VARIABLE [HINTS]
    if (name != "search" && words.size() >= 3 && !words[2].starts_with("-") && words[2] != "root")
      return "search may only set \"root\"";
    return std::nullopt;
  }
  return "\"" + std::string(name) + "\" is not allowed before the first grub.cfg";
}

// UTF-16LE of an ASCII/Latin-1 text, as the Linux EFI stub measures its load options.
Bytes utf16le(std::string_view text) {
  Bytes out;
  out.reserve(text.size() * 2);
  for (unsigned char c : text) {
    out.push_back(c);
    out.push_back(0);
  }
  return out;
}

struct TaggedEvent {
  std::uint32_t id = 0;
  ByteView data;
};

std::optional<TaggedEvent> parse_tagged_event(const Bytes& data) {
  if (data.size() < 8) return std::nullopt;
  auto u32 = [&](std::size_t at) {
    return static_cast<std::uint32_t>(data[at]) | static_cast<std::uint32_t>(data[at + 1]) << 8 |
           static_cast<std::uint32_t>(data[at + 2]) << 16 |
           static_cast<std::uint32_t>(data[at + 3]) << 24;
  };
  const std::uint32_t size = u32(4);
  if (size != data.size() - 8) return std::nullopt;
  return TaggedEvent{u32(0), ByteView(data.data() + 8, size)};
}

enum class FileRole { grub_cfg, kernel, initramfs };

// What one pass over the log found, for the checks below.
struct Tally {
  std::vector<std::string> unexplained;  // at most max_reported_events descriptions
  std::size_t unexplained_count = 0;
  std::size_t judged = 0;
  std::vector<Bytes> applications;
  bool applications_explained = true;
  bool grub_application_seen = false;
  std::size_t files[3] = {0, 0, 0};  // by FileRole
  bool config_seen = false;
  std::vector<MeasuredString> prelude;   // grub commands before the first grub.cfg
  std::vector<MeasuredString> commands;  // grub commands from the first grub.cfg on
  std::vector<MeasuredString> kernel_cmdlines;
  std::size_t gpt_events = 0;
};

class Accountant {
 public:
  Accountant(const TokenMeasurements& token, const ReferenceValues& document, const ReferenceSet& set)
      : alg_(token.hash_alg), document_(document), set_(set) {}

  Result<Tally> run(const eventlog::EventLog& log) {
    const std::uint16_t id = eventlog::tpm_alg_id(alg_);
    for (std::size_t i = 0; i < log.events.size(); ++i) {
      const Event& e = log.events[i];
      if (!eventlog::is_extended(e) || e.mr_index > 3) continue;  // REM[3]: reference.rem3
      const Bytes* digest = e.digest_for(id);
      if (digest == nullptr)
        return fail(Errc::malformed, "event log: record " + std::to_string(i) + " lacks its " +
                                         std::string(crypto::hash_alg_name(alg_)) + " digest");
      ++tally_.judged;
      const std::size_t rem = e.mr_index - 1;
      std::optional<std::string> why = judge(rem, e, *digest);
      // A pinned REM explains its events by the golden value (reference.rems compares it).
      if (why && !set_.rems[rem]) unexplained(i, rem, e, *digest, *why);
    }
    return std::move(tally_);
  }

 private:
  void unexplained(std::size_t index, std::size_t rem, const Event& e, const Bytes& digest,
                   const std::string& why) {
    ++tally_.unexplained_count;
    if (tally_.unexplained.size() >= max_reported_events) return;
    std::string text = "#" + std::to_string(index) + " REM[" + std::to_string(rem) + "] " +
                       eventlog::event_type_name(e.event_type) + " " + hex_encode(digest);
    if (e.event_type == eventlog::ev_ipl || e.event_type == eventlog::ev_efi_action)
      text += " " + quoted(ipl_text(e.data));
    tally_.unexplained.push_back(text + ": " + why);
  }

  // nullopt: the event is explained.
  std::optional<std::string> judge(std::size_t rem, const Event& e, const Bytes& digest) {
    using namespace eventlog;
    const std::uint32_t type = e.event_type;
    if (type == ev_separator)
      return is_zero_separator(alg_, e, digest) ? std::nullopt
                                                : std::optional<std::string>("not a zero separator");
    if (rem == 0) {
      if (is_configuration_event(type)) return std::nullopt;
      if (type == ev_efi_action && is_known_action(alg_, e, digest)) return std::nullopt;
      return "not a firmware configuration event";
    }
    if (rem == 1) return judge_rem1(e, digest);
    return judge_rem2(e, digest);
  }

  std::optional<std::string> judge_rem1(const Event& e, const Bytes& digest) {
    using namespace eventlog;
    const std::uint32_t type = e.event_type;
    if (type == ev_efi_action)
      return is_known_action(alg_, e, digest) ? std::nullopt
                                              : std::optional<std::string>("an unknown EFI action");
    if (type == ev_efi_gpt_event) {
      if (!is_digest_of(alg_, e.data, digest)) return "its digest is not that of its data";
      if (++tally_.gpt_events > 1) return "a second partition table";
      return std::nullopt;
    }
    if (type == ev_efi_boot_services_application) {
      tally_.applications.push_back(digest);
      const bool grub = contains(set_.grub.efi_applications, digest);
      tally_.grub_application_seen = tally_.grub_application_seen || grub;
      if (grub || contains(set_.grub.kernel_efi, digest)) return std::nullopt;
      tally_.applications_explained = false;
      return "an EFI application that is neither the set's grub/shim nor its kernel";
    }
    if (is_driver_event(type))
      return contains(document_.firmware_drivers, digest)
                 ? std::nullopt
                 : std::optional<std::string>("an EFI driver not in firmware_drivers");
    return "not an event the boot path produces";
  }

  std::optional<std::string> judge_rem2(const Event& e, const Bytes& digest) {
    using namespace eventlog;
    if (e.event_type == ev_event_tag) return judge_stub_tag(e, digest);
    if (e.event_type != ev_ipl) return "not an event the boot path produces";
    const std::string_view text = ipl_text(e.data);
    if (text.starts_with(grub_command_prefix)) {
      MeasuredString command{std::string(text.substr(grub_command_prefix.size())), digest};
      if (!string_digest_matches(alg_, grub_command_prefix, command.text, digest))
        return "its digest is not that of its text";
      (tally_.config_seen ? tally_.commands : tally_.prelude).push_back(std::move(command));
      return std::nullopt;  // judged by reference.grub_commands
    }
    if (text.starts_with(kernel_cmdline_prefix)) {
      tally_.kernel_cmdlines.push_back({std::string(text.substr(kernel_cmdline_prefix.size())), digest});
      return std::nullopt;  // judged by reference.kernel_cmdline
    }
    if (std::find(shim_mok_names.begin(), shim_mok_names.end(), text) != shim_mok_names.end())
      return std::nullopt;
    if (!text.empty() && (text.front() == '(' || text.front() == '/')) return judge_file(digest);
    return "an EV_IPL event that is neither a grub command, the command line nor a file";
  }

  // Files are recognised by digest, never by name: a module, font or second initrd is
  // unexplained whatever it is called.
  std::optional<std::string> judge_file(const Bytes& digest) {
    const GrubBootValues& g = set_.grub;
    if (contains(g.grub_cfgs, digest)) {
      ++tally_.files[static_cast<int>(FileRole::grub_cfg)];
      tally_.config_seen = true;
      return std::nullopt;
    }
    if (equal(g.kernel, digest) || contains(g.kernel_alternatives, digest)) {
      ++tally_.files[static_cast<int>(FileRole::kernel)];
      return std::nullopt;
    }
    if (g.initramfs && equal(*g.initramfs, digest)) {
      ++tally_.files[static_cast<int>(FileRole::initramfs)];
      return std::nullopt;
    }
    return "a file that is not the set's grub.cfg, kernel or initramfs";
  }

  std::optional<std::string> judge_stub_tag(const Event& e, const Bytes& digest) {
    auto tag = parse_tagged_event(e.data);
    if (!tag) return "a malformed tagged event";
    const GrubBootValues& g = set_.grub;
    if (tag->id == eventlog::linux_tag_load_options) {
      // The stub measures the command line it received: grub's "BOOT_IMAGE=" + the measured
      // kernel command line, in UTF-16LE.
      if (g.kernel_cmdline && is_digest_of(alg_, utf16le("BOOT_IMAGE=" + *g.kernel_cmdline), digest))
        return std::nullopt;
      return "the kernel's load options are not the set's command line";
    }
    if (tag->id == eventlog::linux_tag_initrd) {
      if (g.initramfs && equal(*g.initramfs, digest)) return std::nullopt;
      return "the initrd the kernel loaded is not the set's initramfs";
    }
    return "an unknown tagged event";
  }

  crypto::HashAlg alg_;
  const ReferenceValues& document_;
  const ReferenceSet& set_;
  Tally tally_;
};

Check check_applications(const ReferenceSet& set, const Tally& t) {
  const GrubBootValues& g = set.grub;
  Check c{"reference.grub",
          "EFI applications from {" + join_hex(g.efi_applications) + "} (grub/shim, at least one)" +
              (g.kernel_efi.empty() ? "" : " or the kernel {" + join_hex(g.kernel_efi) + "}"),
          "", false};
  if (t.applications.empty()) {
    c.found = "no EV_EFI_BOOT_SERVICES_APPLICATION event";
    return c;
  }
  c.found = join_hex(t.applications);
  c.passed = (t.applications_explained || set.rems[1]) && t.grub_application_seen;
  return c;
}

Check check_file_role(std::string name, std::string what, std::size_t count) {
  Check c{std::move(name), "a file event with " + what, "", count > 0};
  c.found = count == 0 ? "none" : std::to_string(count) + " such file event(s)";
  return c;
}

Check check_initramfs(const ReferenceSet& set, const Tally& t) {
  const auto& g = set.grub;
  if (g.initramfs)
    return check_file_role("reference.initramfs", "the initramfs digest " + hex_encode(*g.initramfs),
                           t.files[static_cast<int>(FileRole::initramfs)]);
  // No initramfs expected: any initrd is a file the set does not list (reference.events).
  return {"reference.initramfs", "no initramfs", "none listed; unlisted files fail reference.events",
          true};
}

// The event text is not covered by replay, only the digest is; so the text is trusted only
// when the digest is its measurement.
Check check_kernel_cmdline(const ReferenceSet& set, const Tally& t, crypto::HashAlg alg) {
  const GrubBootValues& g = set.grub;
  if (!g.kernel_cmdline) {
    if (!set.rems[2])
      return {"reference.kernel_cmdline", "a pinned kernel command line",
              "the set pins neither kernel_cmdline nor rems[2]", false};
    return {"reference.kernel_cmdline", "covered by the pinned rems[2]", "not compared separately",
            true};
  }
  Check c{"reference.kernel_cmdline", "exactly one kernel_cmdline event " + quoted(*g.kernel_cmdline),
          "", false};
  if (t.kernel_cmdlines.empty()) {
    c.found = "no kernel_cmdline event";
    return c;
  }
  if (t.kernel_cmdlines.size() > 1) {
    c.found = std::to_string(t.kernel_cmdlines.size()) + " kernel_cmdline events";
    return c;
  }
  const auto& event = t.kernel_cmdlines.front();
  c.found = quoted(event.text);
  if (!eventlog::string_digest_matches(alg, eventlog::kernel_cmdline_prefix, event.text, event.digest)) {
    c.found += " (its digest " + hex_encode(event.digest) + " is not the digest of that text)";
    return c;
  }
  c.passed = event.text == *g.kernel_cmdline;
  return c;
}

Check check_grub_commands(const ReferenceSet& set, const Tally& t) {
  Check c{"reference.grub_commands", "", "", false};
  const auto& pinned = set.grub.grub_commands;
  c.expected = "before grub.cfg: tests, search, set root/prefix, source grub.cfg; then " +
               (pinned ? std::to_string(pinned->size()) + " grub commands as pinned"
                       : std::string("the commands the pinned rems[2] covers"));
  if (t.prelude.size() > max_prelude_commands) {
    c.found = std::to_string(t.prelude.size()) + " commands before grub.cfg";
    return c;
  }
  for (std::size_t i = 0; i < t.prelude.size(); ++i) {
    if (auto why = prelude_refusal(t.prelude[i].text)) {
      c.found = "command " + std::to_string(i) + " before grub.cfg " + quoted(t.prelude[i].text) +
                ": " + *why;
      return c;
    }
  }
  if (!t.config_seen) {
    c.found = "grub read no grub.cfg the set lists";
    return c;
  }
  if (!pinned) {
    c.passed = static_cast<bool>(set.rems[2]);
    c.found = c.passed ? "covered by the pinned rems[2]" : "the set pins no grub commands";
    return c;
  }
  const auto& found = t.commands;
  for (std::size_t i = 0; i < std::max(found.size(), pinned->size()); ++i) {
    if (i >= found.size()) {
      c.found = "only " + std::to_string(found.size()) + " commands; missing command " +
                std::to_string(i) + " " + quoted((*pinned)[i]);
      return c;
    }
    if (i >= pinned->size()) {
      c.found = "command " + std::to_string(i) + " " + quoted(found[i].text) +
                " after the pinned " + std::to_string(pinned->size());
      return c;
    }
    if (found[i].text != (*pinned)[i]) {
      c.found = "command " + std::to_string(i) + " " + quoted(found[i].text) + ", expected " +
                quoted((*pinned)[i]);
      return c;
    }
  }
  c.found = std::to_string(t.prelude.size()) + " commands before grub.cfg, then " +
            std::to_string(found.size()) + " commands, all as pinned";
  c.passed = true;
  return c;
}

Check check_events(const Tally& t) {
  Check c{"reference.events", "every event in REM[0..2] explained by the set", "",
          t.unexplained_count == 0};
  if (c.passed) {
    c.found = std::to_string(t.judged) + " events, all explained";
    return c;
  }
  c.found = std::to_string(t.unexplained_count) + " unexplained: ";
  for (std::size_t i = 0; i < t.unexplained.size(); ++i)
    c.found += (i ? "; " : "") + t.unexplained[i];
  if (t.unexplained_count > t.unexplained.size()) c.found += "; ...";
  return c;
}

}  // namespace

std::optional<Check> check_pinned_rems(const ReferenceSet& set, const TokenMeasurements& token) {
  std::string expected, found;
  bool any = false, passed = true;
  for (std::size_t i = 0; i < rem_count; ++i) {
    if (!set.rems[i]) continue;
    any = true;
    const std::string label = "REM[" + std::to_string(i) + "]=";
    expected += (expected.empty() ? "" : ", ") + label + hex_encode(*set.rems[i]);
    found += (found.empty() ? "" : ", ") + label + hex_encode(token.rems[i]);
    passed = passed && *set.rems[i] == token.rems[i];
  }
  if (!any) return std::nullopt;
  return Check{"reference.rems", expected, found, passed};
}

std::vector<Check> evaluate_grub_set(const eventlog::EventLog& log, const TokenMeasurements& token,
                                     const ReferenceValues& document, const ReferenceSet& set) {
  std::vector<Check> out;
  auto tally = Accountant(token, document, set).run(log);
  if (!tally) {
    out.push_back({"reference.events", "every event in REM[0..2] explained by the set",
                   tally.error().describe(), false});
    return out;
  }
  const GrubBootValues& g = set.grub;
  out.push_back(check_applications(set, *tally));
  out.push_back(check_file_role("reference.grub_cfg", "a grub.cfg digest from {" + join_hex(g.grub_cfgs) + "}",
                                tally->files[static_cast<int>(FileRole::grub_cfg)]));
  std::vector<Bytes> kernels{g.kernel};
  kernels.insert(kernels.end(), g.kernel_alternatives.begin(), g.kernel_alternatives.end());
  out.push_back(check_file_role("reference.kernel", "the kernel digest {" + join_hex(kernels) + "}",
                                tally->files[static_cast<int>(FileRole::kernel)]));
  out.push_back(check_initramfs(set, *tally));
  out.push_back(check_kernel_cmdline(set, *tally, token.hash_alg));
  out.push_back(check_grub_commands(set, *tally));
  out.push_back(check_events(*tally));
  if (!document.firmware_rem0.empty())
    out.push_back({"reference.rem0", "REM[0] one of {" + join_hex(document.firmware_rem0) + "}",
                   hex_encode(token.rems[0]), contains(document.firmware_rem0, token.rems[0])});
  if (auto c = check_pinned_rems(set, token)) out.push_back(std::move(*c));
  // REM[3]: firmware never extends MR 4; openEuler's IMA would (into REM[0] with its virtCCA
  // root of trust, which `ima_rot=tpm` keeps off the REMs). Zero unless the set pins it.
  if (!set.rems[3])
    out.push_back({"reference.rem3", "REM[3] all zero", hex_encode(token.rems[3]),
                   std::all_of(token.rems[3].begin(), token.rems[3].end(),
                               [](std::uint8_t v) { return v == 0; })});
  return out;
}

}  // namespace fde::reference
