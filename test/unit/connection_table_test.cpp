// The attestation port's admission rules (verifier-daemon/server/connection_table.hpp): slots
// in total and per peer, the body-memory budget, and who is shed when either is full.
#include <catch2/catch.hpp>

#include "verifier-daemon/server/connection_table.hpp"

using namespace fde::verifier;
using Ids = std::vector<ConnectionTable::Id>;

namespace {

const std::string alice = peer_group(boost::asio::ip::make_address("192.0.2.1"));
const std::string bob = peer_group(boost::asio::ip::make_address("192.0.2.2"));
const std::string carol = peer_group(boost::asio::ip::make_address("192.0.2.3"));

// Most cases here are about order, not age: nothing is too young to shed, and every body
// byte counts.
AdmissionLimits limits(std::size_t total, std::size_t per_peer, std::size_t body_bytes = 1000,
                       std::chrono::milliseconds shed_after = std::chrono::milliseconds(0)) {
  return AdmissionLimits{total, per_peer, body_bytes, shed_after, 0};
}

const ConnectionTable::Clock::time_point t0{};
ConnectionTable::Clock::time_point at(int ms) { return t0 + std::chrono::milliseconds(ms); }

}  // namespace

TEST_CASE("a peer is an IPv4 address or an IPv6 /64; IPv4-mapped addresses count as IPv4") {
  using boost::asio::ip::make_address;
  CHECK(peer_group(make_address("192.0.2.1")) == peer_group(make_address("::ffff:192.0.2.1")));
  CHECK(peer_group(make_address("192.0.2.1")) != peer_group(make_address("192.0.2.2")));
  CHECK(peer_group(make_address("2001:db8:1:2::1")) == peer_group(make_address("2001:db8:1:2:ffff::9")));
  CHECK(peer_group(make_address("2001:db8:1:2::1")) != peer_group(make_address("2001:db8:1:3::1")));
}

TEST_CASE("over the global cap the oldest unfinished connection is shed for the new one") {
  ConnectionTable table(limits(3, 0));
  CHECK(table.admit(1, alice, t0).admitted);
  CHECK(table.admit(2, bob, t0).admitted);
  CHECK(table.admit(3, carol, t0).admitted);
  auto fourth = table.admit(4, carol, t0);
  CHECK(fourth.admitted);
  CHECK(fourth.shed == Ids{1});
  CHECK_FALSE(table.contains(1));
  CHECK(table.size() == 3);
  CHECK(table.connections_of(alice) == 0);
}

TEST_CASE("a connection being answered is never shed; with every slot answering a new one is refused") {
  ConnectionTable table(limits(2, 0));
  REQUIRE(table.admit(1, alice, t0).admitted);
  REQUIRE(table.admit(2, bob, t0).admitted);
  table.answering(1);
  auto third = table.admit(3, carol, t0);
  CHECK(third.admitted);
  CHECK(third.shed == Ids{2});  // 1 is older but busy
  table.answering(3);
  auto fourth = table.admit(4, carol, t0);
  CHECK_FALSE(fourth.admitted);
  CHECK(fourth.shed.empty());
  CHECK(table.size() == 2);
  // Once answered, a keep-alive connection waits idle and is sheddable again, as the newest.
  table.idle(1, t0);
  auto fifth = table.admit(5, bob, t0);
  CHECK(fifth.admitted);
  CHECK(fifth.shed == Ids{1});
}

TEST_CASE("an idle keep-alive connection counts as unfinished from the moment it went idle") {
  ConnectionTable table(limits(3, 0));
  REQUIRE(table.admit(1, alice, t0).admitted);
  REQUIRE(table.admit(2, bob, t0).admitted);
  REQUIRE(table.admit(3, carol, t0).admitted);
  table.answering(1);
  table.idle(1, t0);  // now younger than 2 and 3
  CHECK(table.admit(4, carol, t0).shed == Ids{2});
  CHECK(table.admit(5, carol, t0).shed == Ids{3});
  CHECK(table.admit(6, carol, t0).shed == Ids{1});
}

TEST_CASE("over a peer's cap that peer's own oldest unfinished connection is shed, others are untouched") {
  ConnectionTable table(limits(100, 2));
  REQUIRE(table.admit(1, alice, t0).admitted);
  REQUIRE(table.admit(2, bob, t0).admitted);
  REQUIRE(table.admit(3, alice, t0).admitted);
  auto third_of_alice = table.admit(4, alice, t0);
  CHECK(third_of_alice.admitted);
  CHECK(third_of_alice.shed == Ids{1});
  CHECK(table.connections_of(alice) == 2);
  CHECK(table.connections_of(bob) == 1);
  // With both of alice's connections answering, a third is refused; bob still gets in.
  table.answering(3);
  table.answering(4);
  CHECK_FALSE(table.admit(5, alice, t0).admitted);
  CHECK(table.admit(6, bob, t0).admitted);
  CHECK(table.connections_of(alice) == 2);
}

TEST_CASE("the per-peer cap is off at 0") {
  ConnectionTable table(limits(10, 0));
  for (ConnectionTable::Id id = 1; id <= 10; ++id) CHECK(table.admit(id, alice, t0).shed.empty());
  CHECK(table.connections_of(alice) == 10);
}

TEST_CASE("body bytes are counted as they arrive and released when the connection is idle or gone") {
  ConnectionTable table(limits(10, 0, 1000));
  REQUIRE(table.admit(1, alice, t0).admitted);
  REQUIRE(table.admit(2, bob, t0).admitted);
  CHECK(table.hold_body(1, 100, t0).verdict == ConnectionTable::BodyVerdict::granted);
  CHECK(table.hold_body(1, 400, t0).verdict == ConnectionTable::BodyVerdict::granted);  // totals, not increments
  CHECK(table.hold_body(2, 300, t0).verdict == ConnectionTable::BodyVerdict::granted);
  CHECK(table.buffered_body_bytes() == 700);
  table.answering(1);
  CHECK(table.buffered_body_bytes() == 700);  // still in memory while it is answered
  table.idle(1, t0);
  CHECK(table.buffered_body_bytes() == 300);
  table.remove(2);
  CHECK(table.buffered_body_bytes() == 0);
  CHECK(table.hold_body(2, 10, t0).verdict == ConnectionTable::BodyVerdict::gone);
}

TEST_CASE("a body over the budget sheds older bodies still arriving, oldest first, or is refused") {
  ConnectionTable table(limits(10, 0, 1000));
  for (ConnectionTable::Id id = 1; id <= 5; ++id) REQUIRE(table.admit(id, alice, t0).admitted);
  REQUIRE(table.hold_body(1, 400, t0).verdict == ConnectionTable::BodyVerdict::granted);
  REQUIRE(table.hold_body(2, 300, t0).verdict == ConnectionTable::BodyVerdict::granted);
  REQUIRE(table.hold_body(3, 200, t0).verdict == ConnectionTable::BodyVerdict::granted);

  SECTION("the oldest body makes room") {
    auto grant = table.hold_body(4, 450, t0);
    CHECK(grant.verdict == ConnectionTable::BodyVerdict::granted);
    CHECK(grant.shed == Ids{1});
    CHECK(table.buffered_body_bytes() == 950);
  }
  SECTION("as many as needed, oldest first") {
    auto grant = table.hold_body(4, 800, t0);
    CHECK(grant.verdict == ConnectionTable::BodyVerdict::granted);
    CHECK(grant.shed == Ids{1, 2});
    CHECK(table.buffered_body_bytes() == 1000);
  }
  SECTION("bodies being answered cannot be shed: then the new body is refused and nothing is shed") {
    table.answering(1);
    table.answering(2);
    auto grant = table.hold_body(4, 800, t0);
    CHECK(grant.verdict == ConnectionTable::BodyVerdict::over_budget);
    CHECK(grant.shed.empty());
    CHECK(table.size() == 5);
    CHECK(table.buffered_body_bytes() == 900);
  }
  SECTION("a body never sheds bodies that started after it") {
    // 3 started last of the three; growing it may take room from 1 and 2 only.
    auto grant = table.hold_body(3, 900, t0);
    CHECK(grant.shed == Ids{1, 2});
    REQUIRE(table.hold_body(5, 50, t0).verdict == ConnectionTable::BodyVerdict::granted);
    // 5 started after 3: 3 cannot grow into 5's room.
    CHECK(table.hold_body(3, 960, t0).verdict == ConnectionTable::BodyVerdict::over_budget);
    CHECK(table.contains(5));
    // But a body starting now may shed both, oldest first.
    auto newest = table.hold_body(4, 960, t0);
    CHECK(newest.verdict == ConnectionTable::BodyVerdict::granted);
    CHECK(newest.shed == Ids{3, 5});
  }
}

TEST_CASE("shed_oldest frees a slot in an emergency, never one being answered") {
  ConnectionTable table(limits(10, 0));
  REQUIRE(table.admit(1, alice, t0).admitted);
  REQUIRE(table.admit(2, bob, t0).admitted);
  table.answering(1);
  CHECK(table.shed_oldest() == Ids{2});
  CHECK(table.shed_oldest().empty());
  CHECK(table.size() == 1);
}

TEST_CASE("the end of a burst is reported once, when body memory is free and few connections remain") {
  ConnectionTable table(limits(16, 0, 8000));
  REQUIRE(table.admit(1, alice, t0).admitted);
  CHECK_FALSE(table.take_quiet_after_burst());  // no burst yet
  REQUIRE(table.hold_body(1, 2000, t0).verdict == ConnectionTable::BodyVerdict::granted);  // >= 1/8 of the budget
  CHECK_FALSE(table.take_quiet_after_burst());  // still holding it
  table.remove(1);
  CHECK(table.take_quiet_after_burst());
  CHECK_FALSE(table.take_quiet_after_burst());
  for (ConnectionTable::Id id = 10; id < 14; ++id) REQUIRE(table.admit(id, bob, t0).admitted);  // 1/4 of the slots
  CHECK_FALSE(table.take_quiet_after_burst());
  for (ConnectionTable::Id id = 10; id < 14; ++id) table.remove(id);
  CHECK(table.take_quiet_after_burst());
}

TEST_CASE("nothing younger than shed_after is shed: the newcomer is refused instead") {
  ConnectionTable table(limits(2, 2, 1000, std::chrono::milliseconds(1000)));
  REQUIRE(table.admit(1, alice, at(0)).admitted);
  REQUIRE(table.admit(2, bob, at(500)).admitted);
  auto early = table.admit(3, carol, at(900));
  CHECK_FALSE(early.admitted);
  CHECK(early.shed.empty());
  auto later = table.admit(4, carol, at(1000));
  CHECK(later.admitted);
  CHECK(later.shed == Ids{1});
  CHECK_FALSE(table.admit(5, carol, at(1400)).admitted);  // 2 is 900 ms old, 4 is 400 ms old
  CHECK(table.admit(6, carol, at(1500)).shed == Ids{2});

  SECTION("the per-peer cap waits the same way") {
    ConnectionTable peers(limits(100, 2, 1000, std::chrono::milliseconds(1000)));
    REQUIRE(peers.admit(1, alice, at(0)).admitted);
    REQUIRE(peers.admit(2, alice, at(100)).admitted);
    CHECK_FALSE(peers.admit(3, alice, at(999)).admitted);
    CHECK(peers.connections_of(alice) == 2);
    CHECK(peers.admit(4, alice, at(1000)).shed == Ids{1});
  }
  SECTION("bodies too") {
    ConnectionTable bodies(limits(100, 0, 1000, std::chrono::milliseconds(1000)));
    for (ConnectionTable::Id id = 1; id <= 3; ++id) REQUIRE(bodies.admit(id, alice, at(0)).admitted);
    REQUIRE(bodies.hold_body(1, 600, at(0)).verdict == ConnectionTable::BodyVerdict::granted);
    REQUIRE(bodies.hold_body(2, 300, at(600)).verdict == ConnectionTable::BodyVerdict::granted);
    CHECK(bodies.hold_body(3, 500, at(700)).verdict == ConnectionTable::BodyVerdict::over_budget);
    auto grant = bodies.hold_body(3, 500, at(1000));
    CHECK(grant.verdict == ConnectionTable::BodyVerdict::granted);
    CHECK(grant.shed == Ids{1});
    // 2 is still too young to give way for more.
    CHECK(bodies.hold_body(3, 800, at(1500)).verdict == ConnectionTable::BodyVerdict::over_budget);
  }
}

TEST_CASE("each connection's first body bytes do not count against the budget") {
  ConnectionTable table(AdmissionLimits{10, 0, 1000, std::chrono::milliseconds(0), 100});
  for (ConnectionTable::Id id = 1; id <= 3; ++id) REQUIRE(table.admit(id, alice, t0).admitted);
  REQUIRE(table.hold_body(1, 1100, t0).verdict == ConnectionTable::BodyVerdict::granted);  // counts 1000
  table.answering(1);
  CHECK(table.buffered_body_bytes() == 1000);
  // The budget is full and cannot be freed, yet a small body still fits...
  CHECK(table.hold_body(2, 100, t0).verdict == ConnectionTable::BodyVerdict::granted);
  // ...and only what goes beyond the allowance is refused.
  CHECK(table.hold_body(3, 101, t0).verdict == ConnectionTable::BodyVerdict::over_budget);
}
