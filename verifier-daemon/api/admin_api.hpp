// The daemon side of the admin socket (server/admin_socket.hpp): one JSON request line in,
// one JSON response line out. The protocol is documented in docs/fde-admin.md:
//
//   {"command": "enroll", "bundle": {...enrollment bundle...}}
//   {"command": "list"}
//   {"command": "show", "image_id": I}
//   {"command": "add-reference", "image_id": I, "reference": {a set, or a whole document},
//    "replace"?: NAME}                  (adds, and retires set NAME, in one change)
//   {"command": "retire-reference", "image_id": I, "set": NAME}
//   {"command": "revoke" | "reinstate", "image_id": I}
//   {"command": "audit", "image_id"?: I, "decision"?: "release"|"deny", "after_sequence"?: N,
//    "limit"?: N, "checks"?: bool}
//   {"command": "verify-audit", "expect_head"?: "SEQ:HEX"}
//   {"command": "explain", "sequence": N} | {"command": "explain", "image_id": I}
//   {"command": "delete", "image_id": I, "confirm": I}   (confirm repeats the image id)
//   {"command": "backup", "path": ABSOLUTE PATH}         (written by the daemon, 0600, new file)
//   {"command": "rotate-kek", "new_kek": 64 HEX DIGITS}
//   {"command": "reload"}                                (as SIGHUP; fails when the reload failed)
//
//   -> {"ok": true, "result": {...}} | {"ok": false, "error": ERRC, "message": text}
//
// Error codes are fde::Errc names (invalid_argument, not_found, malformed, io, ...).
// Every command that changes state is recorded in the audit chain with the peer's uid and pid.
#pragma once

#include <functional>
#include <string>

#include "verifier-daemon/log/logger.hpp"
#include "verifier-daemon/server/admin_socket.hpp"
#include "verifier-daemon/store/store.hpp"

namespace fde::verifier {

class AdminApi {
 public:
  static constexpr std::size_t default_audit_limit = 50;
  static constexpr std::size_t max_audit_limit = 1000;

  // `store` and `logger` must outlive the API.
  AdminApi(Store& store, Logger& logger) : store_(store), logger_(logger) {}

  // The AdminHandler. The request line may hold a disk key (enroll): it is parsed from a
  // private copy that is wiped before this returns. `peer` (SO_PEERCRED) is who the audit
  // records of any change name. Never throws.
  std::string handle(const AdminPeer& peer, const std::string& request_line);

  // What "reload" runs: the daemon's reload (the same as on SIGHUP), returning an error when
  // the new configuration was not applied. Without one, "reload" is refused.
  using ReloadHandler = std::function<Result<void>()>;
  void set_reload_handler(ReloadHandler handler) { reload_ = std::move(handler); }

 private:
  Store& store_;
  Logger& logger_;
  ReloadHandler reload_;
};

}  // namespace fde::verifier
