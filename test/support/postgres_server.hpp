// A throwaway PostgreSQL server for tests: initdb and postgres from Debian's postgresql
// package, data and the Unix socket in a fresh temporary directory, no TCP listener,
// password authentication (scram-sha-256) for the role "fde". Run as root, the server runs
// as the "postgres" user (postgres refuses root). Missing binaries are a test failure, not a
// skip: scripts/install-deps.sh installs them. The postmaster is the test process's own
// child with a parent-death signal, so a crashed test leaves no server behind; stopped and
// removed by the destructor.
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace fde::testing {

class PostgresServer {
 public:
  static constexpr const char* role = "fde";
  static constexpr const char* password = "fde-test-password";

  PostgresServer() {
    bin_ = find_binaries();
    char pattern[] = "/tmp/fde-pg-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    if (::geteuid() == 0) {
      const passwd* pw = ::getpwnam("postgres");
      if (pw == nullptr)
        throw std::runtime_error("running as root, the test server needs the \"postgres\" user (package postgresql)");
      run_as_ = std::make_pair(pw->pw_uid, pw->pw_gid);
      if (::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) throw std::runtime_error("cannot chown " + dir_);
    }
    try {
      write_owned(dir_ + "/pwfile", std::string(password) + "\n");
      run({bin_ + "/initdb", "-D", data(), "-U", role, "--pwfile=" + dir_ + "/pwfile", "--auth=scram-sha-256",
           "--encoding=UTF8", "--locale=C", "--no-sync"},
          "initdb");
      start();
    } catch (...) {
      remove_directory();
      throw;
    }
  }
  ~PostgresServer() {
    if (postmaster_ > 0) signal_and_wait(SIGQUIT);  // immediate shutdown: the data is thrown away
    remove_directory();
  }
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // One server per test process, started on first use.
  static PostgresServer& shared() {
    static PostgresServer server;
    return server;
  }

  // Starts the postmaster and waits (up to 60 s) until it accepts connections.
  void start() {
    postmaster_ = spawn({bin_ + "/postgres", "-D", data(), "-k", dir_, "-c", "listen_addresses=", "-F", "-c",
                         "max_connections=200"},
                        dir_ + "/server.log", true);
    if (postmaster_ < 0) throw std::runtime_error("cannot start postgres");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
      if (try_execute("postgres", "SELECT 1").empty()) return;
      int status = 0;
      if (::waitpid(postmaster_, &status, WNOHANG) == postmaster_) {
        postmaster_ = -1;
        throw std::runtime_error("postgres exited at start: " + log());
      }
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("postgres did not start: " + log());
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  // Fast shutdown: clients are disconnected, as when the database host restarts.
  void stop() {
    if (postmaster_ > 0) signal_and_wait(SIGINT);
  }

  // A libpq connection string for `database`, without the password.
  std::string conninfo(const std::string& database) const {
    return "host=" + dir_ + " port=5432 user=" + role + " dbname=" + database;
  }
  // A fresh, empty database.
  std::string create_database() {
    static std::atomic<int> counter{0};
    std::string name = "fde_test_" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
    execute("postgres", "CREATE DATABASE " + name);
    return name;
  }
  // Runs SQL as the superuser role; throws with the server's message on failure.
  void execute(const std::string& database, const std::string& sql) const {
    std::string error = try_execute(database, sql);
    if (!error.empty()) throw std::runtime_error("postgresql: " + error);
  }
  // "" on success, else the server's message.
  std::string try_execute(const std::string& database, const std::string& sql) const {
    const std::string info = conninfo(database) + " password=" + password;
    std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdb(info.c_str()), &PQfinish);
    if (PQstatus(conn.get()) != CONNECTION_OK) return std::string("connect: ") + PQerrorMessage(conn.get());
    PQsetNoticeProcessor(conn.get(), [](void*, const char*) {}, nullptr);
    std::unique_ptr<PGresult, decltype(&PQclear)> result(PQexec(conn.get(), sql.c_str()), &PQclear);
    const auto status = PQresultStatus(result.get());
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return "";
    return PQresultErrorMessage(result.get());
  }
  std::string log() const {
    std::ifstream in(dir_ + "/server.log");
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  const std::string& directory() const { return dir_; }

 private:
  std::string data() const { return dir_ + "/data"; }

  // $FDE_POSTGRES_BIN, else the newest /usr/lib/postgresql/<version>/bin with initdb.
  static std::string find_binaries() {
    if (const char* bin = std::getenv("FDE_POSTGRES_BIN"); bin != nullptr && *bin != '\0') {
      if (!std::filesystem::exists(std::filesystem::path(bin) / "initdb"))
        throw std::runtime_error(std::string("FDE_POSTGRES_BIN=") + bin + " has no initdb");
      return bin;
    }
    std::vector<std::pair<int, std::string>> found;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
      const std::string name = entry.path().filename().string();
      if (std::filesystem::exists(entry.path() / "bin" / "initdb") && !name.empty() &&
          std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; }))
        found.emplace_back(std::stoi(name), (entry.path() / "bin").string());
    }
    if (found.empty())
      throw std::runtime_error("PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql; "
                               "install the postgresql package (scripts/install-deps.sh) or set FDE_POSTGRES_BIN");
    std::sort(found.begin(), found.end());
    return found.back().second;
  }

  void write_owned(const std::string& path, const std::string& text) const {
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out << text;
    }
    ::chmod(path.c_str(), 0600);
    if (run_as_ && ::chown(path.c_str(), run_as_->first, run_as_->second) != 0)
      throw std::runtime_error("cannot chown " + path);
  }

  // A child running `argv` (as the postgres user when we are root), output to `log`. With
  // `die_with_us`, it gets SIGQUIT when this process ends, however it ends.
  pid_t spawn(const std::vector<std::string>& argv, const std::string& log, bool die_with_us) const {
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid != 0) return pid;
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out >= 0) {
      ::dup2(out, STDOUT_FILENO);
      ::dup2(out, STDERR_FILENO);
    }
    if (::chdir(dir_.c_str()) != 0) ::_exit(127);
    if (run_as_ && (::setgroups(0, nullptr) != 0 || ::setgid(run_as_->second) != 0 || ::setuid(run_as_->first) != 0))
      ::_exit(126);
    // After the uid change, which would clear it; the thread that forked must outlive the server.
    if (die_with_us && (::prctl(PR_SET_PDEATHSIG, SIGQUIT) != 0 || ::getppid() != parent)) ::_exit(125);
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  void signal_and_wait(int signal) {
    ::kill(postmaster_, signal);
    int status = 0;
    while (::waitpid(postmaster_, &status, 0) < 0 && errno == EINTR) {
    }
    postmaster_ = -1;
  }
  void remove_directory() const {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  int run_quietly(const std::vector<std::string>& argv) const {
    const pid_t pid = spawn(argv, dir_ + "/tools.log", false);
    if (pid < 0) return -1;
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  void run(const std::vector<std::string>& argv, const std::string& what) const {
    const int status = run_quietly(argv);
    if (status != 0) {
      std::ifstream in(dir_ + "/tools.log");
      std::stringstream text;
      text << in.rdbuf();
      throw std::runtime_error(what + " failed (exit " + std::to_string(status) + "): " + text.str() + log());
    }
  }

  std::string bin_;
  std::string dir_;
  std::optional<std::pair<uid_t, gid_t>> run_as_;
  pid_t postmaster_ = -1;
};

}  // namespace fde::testing
