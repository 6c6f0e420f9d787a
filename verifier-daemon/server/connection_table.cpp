// Admission bookkeeping: slots per peer and in total, and the body-memory budget.
#include "verifier-daemon/server/connection_table.hpp"

#include <algorithm>

namespace fde::verifier {

std::string peer_group(const boost::asio::ip::address& address) {
  if (address.is_v4()) {
    const auto bytes = address.to_v4().to_bytes();
    return std::string("4:") + std::string(bytes.begin(), bytes.end());
  }
  const auto v6 = address.to_v6();
  if (v6.is_v4_mapped()) return peer_group(boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6));
  const auto bytes = v6.to_bytes();
  return std::string("6:") + std::string(bytes.begin(), bytes.begin() + 8);
}

std::optional<ConnectionTable::Id> ConnectionTable::old_enough(const Order& order, Clock::time_point now) const {
  if (order.empty()) return std::nullopt;
  const Id oldest = order.begin()->second;
  if (now - entries_.at(oldest).unfinished_at < limits_.shed_after) return std::nullopt;
  return oldest;
}

ConnectionTable::Admission ConnectionTable::admit(Id id, const std::string& peer, Clock::time_point now) {
  Admission result;
  const auto known = peers_.find(peer);
  const bool peer_full = limits_.max_connections_per_peer != 0 && known != peers_.end() &&
                         known->second.connections >= limits_.max_connections_per_peer;
  const bool all_full = entries_.size() >= limits_.max_connections;
  // Decide both victims before shedding either, so that a refusal sheds nothing.
  std::optional<Id> peer_victim;
  if (peer_full) {
    peer_victim = old_enough(known->second.unfinished, now);
    if (!peer_victim) return result;  // the peer's connections are all answering or young
  }
  // Shedding the peer's own connection also frees the global slot it held.
  if (all_full && !peer_victim) {
    const auto victim = old_enough(unfinished_, now);
    if (!victim) return result;  // every slot is answering or young
    erase(*victim);
    result.shed.push_back(*victim);
  }
  if (peer_victim) {
    erase(*peer_victim);
    result.shed.push_back(*peer_victim);
  }
  Entry& entry = entries_[id];
  entry.peer = peer;
  ++peers_[peer].connections;
  make_unfinished(id, entry, now);
  result.admitted = true;
  note_pressure();
  return result;
}

ConnectionTable::BodyGrant ConnectionTable::hold_body(Id id, std::size_t bytes, Clock::time_point now) {
  BodyGrant grant;
  const auto found = entries_.find(id);
  if (found == entries_.end()) return grant;
  grant.verdict = BodyVerdict::over_budget;
  Entry& entry = found->second;
  bytes = bytes > limits_.body_bytes_per_connection ? bytes - limits_.body_bytes_per_connection : 0;
  const std::size_t others = body_bytes_ - entry.body_bytes;
  if (others + bytes > limits_.max_buffered_body_bytes) {
    // Room can only come from bodies that started before this one and are still arriving.
    const std::size_t need = others + bytes - limits_.max_buffered_body_bytes;
    std::size_t freed = 0;
    std::vector<Id> victims;
    const std::uint64_t mine = entry.body_since != 0 ? entry.body_since : next_order_;
    for (const auto& [order, other] : bodies_) {
      if (freed >= need || order >= mine) break;
      const Entry& older = entries_.at(other);
      if (now - older.body_at < limits_.shed_after) break;  // the rest are younger still
      freed += older.body_bytes;
      victims.push_back(other);
    }
    if (freed < need) return grant;
    for (const Id victim : victims) erase(victim);
    grant.shed = std::move(victims);
  }
  if (entry.body_since == 0) {
    entry.body_since = next_order_++;
    entry.body_at = now;
    bodies_.emplace(entry.body_since, id);
  }
  body_bytes_ = body_bytes_ - entry.body_bytes + bytes;
  entry.body_bytes = bytes;
  grant.verdict = BodyVerdict::granted;
  note_pressure();
  return grant;
}

void ConnectionTable::answering(Id id) {
  const auto found = entries_.find(id);
  if (found == entries_.end() || found->second.stage == Stage::answering) return;
  make_finished(id, found->second);
}

void ConnectionTable::idle(Id id, Clock::time_point now) {
  const auto found = entries_.find(id);
  if (found == entries_.end()) return;
  drop_body(id, found->second);
  if (found->second.stage == Stage::answering) make_unfinished(id, found->second, now);
}

void ConnectionTable::remove(Id id) {
  if (entries_.count(id) != 0) erase(id);
}

std::vector<ConnectionTable::Id> ConnectionTable::shed_oldest() {
  if (unfinished_.empty()) return {};
  const Id victim = unfinished_.begin()->second;
  erase(victim);
  return {victim};
}

std::size_t ConnectionTable::connections_of(const std::string& peer) const {
  const auto found = peers_.find(peer);
  return found == peers_.end() ? 0 : found->second.connections;
}

bool ConnectionTable::take_quiet_after_burst() {
  if (!burst_ || body_bytes_ != 0 || entries_.size() > limits_.max_connections / 16) return false;
  burst_ = false;
  return true;
}

void ConnectionTable::make_unfinished(Id id, Entry& entry, Clock::time_point now) {
  entry.stage = Stage::unfinished;
  entry.since = next_order_++;
  entry.unfinished_at = now;
  unfinished_.emplace(entry.since, id);
  peers_[entry.peer].unfinished.emplace(entry.since, id);
}

void ConnectionTable::make_finished(Id id, Entry& entry) {
  unfinished_.erase({entry.since, id});
  peers_[entry.peer].unfinished.erase({entry.since, id});
  // The body stays counted (it is still in memory) but can no longer be shed.
  if (entry.body_since != 0) bodies_.erase({entry.body_since, id});
  entry.stage = Stage::answering;
}

void ConnectionTable::drop_body(Id id, Entry& entry) {
  if (entry.body_since != 0) bodies_.erase({entry.body_since, id});
  body_bytes_ -= entry.body_bytes;
  entry.body_bytes = 0;
  entry.body_since = 0;
}

void ConnectionTable::erase(Id id) {
  const auto found = entries_.find(id);
  Entry& entry = found->second;
  drop_body(id, entry);
  if (entry.stage == Stage::unfinished) unfinished_.erase({entry.since, id});
  const auto peer = peers_.find(entry.peer);
  peer->second.unfinished.erase({entry.since, id});
  if (--peer->second.connections == 0) peers_.erase(peer);
  entries_.erase(found);
}

void ConnectionTable::note_pressure() {
  if (entries_.size() >= std::max<std::size_t>(limits_.max_connections / 4, 1) ||
      body_bytes_ >= limits_.max_buffered_body_bytes / 8)
    burst_ = true;
}

}  // namespace fde::verifier
