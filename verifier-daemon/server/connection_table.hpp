// Admission control for the attestation port: which connections may hold a slot and how many
// request-body bytes may sit in memory at once. The rule everywhere is "under pressure, drop
// the oldest unfinished work": a connection that has not finished its request (TLS
// handshake, headers or body still coming) or waits idle between keep-alive requests can be
// shed to make room for a newer one; a connection whose request is being answered cannot.
// An honest agent sends its request within a few round trips, so it is always among the
// newest; a slowloris client, an idle socket or a trickled body grows old and goes first.
//
// Nothing younger than `shed_after` is shed: a newcomer that would need it is refused
// instead. That protects an honest connection once admitted (it has shed_after to finish
// its request however fast others arrive) and bounds the work a flood can make the server
// start (at most max_connections new handshakes per shed_after).
//
// Pure bookkeeping (no sockets, not thread-safe; the caller passes the time): the server
// calls it under its own lock, closes what it is told to shed and answers 503 when a body
// is refused.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/ip/address.hpp>

namespace fde::verifier {

struct AdmissionLimits {
  std::size_t max_connections = 1024;
  std::size_t max_connections_per_peer = 64;  // 0: no per-peer cap
  std::size_t max_buffered_body_bytes = 64 * 1024 * 1024;
  std::chrono::milliseconds shed_after{1000};
  // Each connection's first bytes of body do not draw on max_buffered_body_bytes: a
  // challenge or a small attestation never waits for room behind large bodies (their sum
  // is bounded by max_connections anyway).
  std::size_t body_bytes_per_connection = 16 * 1024;
};

// The unit the per-peer cap counts: an IPv4 address, or the /64 prefix of an IPv6 address
// (one host usually owns a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
std::string peer_group(const boost::asio::ip::address& address);

class ConnectionTable {
 public:
  using Id = std::uint64_t;
  using Clock = std::chrono::steady_clock;

  explicit ConnectionTable(const AdmissionLimits& limits) : limits_(limits) {}

  struct Admission {
    bool admitted = false;
    std::vector<Id> shed;  // close these now; they are already out of the table
  };
  // A new connection from `peer`. Over the peer's cap, the peer's oldest unfinished
  // connection is shed for it; over the global cap, the oldest unfinished connection of
  // anyone. With nothing old enough to shed it is refused. `id` must be new.
  Admission admit(Id id, const std::string& peer, Clock::time_point now);

  enum class BodyVerdict {
    granted,
    over_budget,  // answer 503: the room could not be made
    gone,         // the connection was shed meanwhile: stop
  };
  struct BodyGrant {
    BodyVerdict verdict = BodyVerdict::gone;
    std::vector<Id> shed;
  };
  // The connection's request now holds `bytes` of body in memory (the total so far, not an
  // increment); what exceeds body_bytes_per_connection counts against the budget. Over the budget, bodies that started before this one (and at least
  // shed_after ago) and are still arriving are shed, oldest first, as far as that makes
  // room; if it cannot, nothing is shed and the grant fails.
  BodyGrant hold_body(Id id, std::size_t bytes, Clock::time_point now);
  // The request was read in full and is being answered: not sheddable until idle().
  void answering(Id id);
  // The answer is out and the body freed; the connection waits for its next request.
  void idle(Id id, Clock::time_point now);
  // The connection ended (also fine for one already shed).
  void remove(Id id);
  // Frees a slot in an emergency (the process ran out of descriptors): sheds the oldest
  // unfinished connection, if any, however young.
  std::vector<Id> shed_oldest();

  bool contains(Id id) const { return entries_.count(id) != 0; }
  std::size_t size() const { return entries_.size(); }
  std::size_t connections_of(const std::string& peer) const;
  // Counted body bytes (beyond each connection's body_bytes_per_connection).
  std::size_t buffered_body_bytes() const { return body_bytes_; }

  // True once after a burst (many connections or many body bytes) has passed: the moment to
  // hand freed heap memory back to the system (malloc_trim). Re-armed by the next burst.
  bool take_quiet_after_burst();

 private:
  enum class Stage { unfinished, answering };
  struct Entry {
    std::string peer;
    Stage stage = Stage::unfinished;
    std::uint64_t since = 0;       // order among unfinished connections (smaller = older)
    std::uint64_t body_since = 0;  // order among body readers; 0: no body held
    Clock::time_point unfinished_at{};
    Clock::time_point body_at{};
    std::size_t body_bytes = 0;
  };
  using Order = std::set<std::pair<std::uint64_t, Id>>;
  struct Peer {
    std::size_t connections = 0;
    Order unfinished;
  };

  void make_unfinished(Id id, Entry& entry, Clock::time_point now);
  // The oldest entry of `order` if it has been unfinished for at least shed_after.
  std::optional<Id> old_enough(const Order& order, Clock::time_point now) const;
  void make_finished(Id id, Entry& entry);
  void drop_body(Id id, Entry& entry);
  void erase(Id id);
  void note_pressure();

  AdmissionLimits limits_;
  std::unordered_map<Id, Entry> entries_;
  std::map<std::string, Peer, std::less<>> peers_;
  Order unfinished_;  // every sheddable connection, oldest first
  Order bodies_;      // unfinished connections holding body bytes, by body start
  std::size_t body_bytes_ = 0;
  std::uint64_t next_order_ = 1;
  bool burst_ = false;
};

}  // namespace fde::verifier
