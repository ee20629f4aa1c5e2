#include "coordinator/store.h"

#include <sqlite3.h>

#include <map>

#include "absl/strings/str_cat.h"

namespace echofed {
namespace {

absl::Status SqlError(sqlite3* db, absl::string_view what) {
  int code = sqlite3_errcode(db);
  std::string message = absl::StrCat(what, ": ", sqlite3_errmsg(db));
  if (code == SQLITE_FULL) return absl::ResourceExhaustedError(message);
  if (code == SQLITE_READONLY || code == SQLITE_PERM ||
      code == SQLITE_CANTOPEN) {
    return absl::PermissionDeniedError(message);
  }
  return absl::InternalError(message);
}

// A prepared statement that finalises itself.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return stmt_; }
  void BindText(int index, const std::string& text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()),
                      SQLITE_TRANSIENT);
  }
  void BindBlob(int index, const std::string& blob) {
    sqlite3_bind_blob(stmt_, index, blob.data(), static_cast<int>(blob.size()),
                      SQLITE_TRANSIENT);
  }
  void BindInt(int index, int64_t value) {
    sqlite3_bind_int64(stmt_, index, value);
  }
  std::string ColumnBytes(int column) {
    const void* data = sqlite3_column_blob(stmt_, column);
    int size = sqlite3_column_bytes(stmt_, column);
    return data == nullptr ? std::string()
                           : std::string(static_cast<const char*>(data), size);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(
          path.c_str(), &db,
          SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
          nullptr) != SQLITE_OK) {
    absl::Status status = SqlError(db, absl::StrCat("cannot open ", path));
    sqlite3_close(db);
    return status;
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<Store> store(new Store(db));
  absl::MutexLock lock(&store->mu_);
  for (const char* sql : {
           "PRAGMA journal_mode=WAL",
           // Every commit fsyncs the WAL: a round counts as committed only
           // once its record survives a power cut (SaveRound's unsynced
           // saves are the one exception, and say why).
           "PRAGMA synchronous=FULL",
           "CREATE TABLE IF NOT EXISTS runs ("
           " run_id TEXT PRIMARY KEY, plan BLOB NOT NULL, state INTEGER NOT "
           "NULL, message TEXT NOT NULL DEFAULT '', created_ms INTEGER NOT "
           "NULL)",
           "CREATE TABLE IF NOT EXISTS rounds ("
           " run_id TEXT NOT NULL REFERENCES runs(run_id), round INTEGER NOT "
           "NULL, record BLOB NOT NULL, PRIMARY KEY (run_id, round))",
       }) {
    if (absl::Status status = store->Exec(sql); !status.ok()) return status;
  }
  return store;
}

Store::~Store() {
  absl::MutexLock lock(&mu_);
  sqlite3_close(db_);
}

absl::Status Store::Exec(const std::string& sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
    absl::Status status = SqlError(db_, sql);
    sqlite3_free(error);
    return status;
  }
  return absl::OkStatus();
}

absl::Status Store::SaveRun(const std::string& run_id, const Plan& plan,
                            RunStatus::State state, const std::string& message,
                            int64_t created_unix_ms) {
  absl::MutexLock lock(&mu_);
  Statement insert(db_,
                   "INSERT OR REPLACE INTO runs (run_id, plan, state, message, "
                   "created_ms) VALUES (?, ?, ?, ?, ?)");
  if (!insert.ok()) return SqlError(db_, "prepare");
  insert.BindText(1, run_id);
  insert.BindBlob(2, plan.SerializeAsString());
  insert.BindInt(3, state);
  insert.BindText(4, message);
  insert.BindInt(5, created_unix_ms);
  if (sqlite3_step(insert.get()) != SQLITE_DONE) {
    return SqlError(db_, "save run");
  }
  return absl::OkStatus();
}

absl::Status Store::UpdateRunState(const std::string& run_id,
                                   RunStatus::State state,
                                   const std::string& message) {
  absl::MutexLock lock(&mu_);
  Statement update(db_,
                   "UPDATE runs SET state = ?, message = ? WHERE run_id = ?");
  if (!update.ok()) return SqlError(db_, "prepare");
  update.BindInt(1, state);
  update.BindText(2, message);
  update.BindText(3, run_id);
  if (sqlite3_step(update.get()) != SQLITE_DONE) {
    return SqlError(db_, "update run");
  }
  return absl::OkStatus();
}

absl::Status Store::SaveRound(const std::string& run_id,
                              const RoundRecord& round,
                              RunStatus::State run_state, bool synced) {
  absl::MutexLock lock(&mu_);
  // In WAL mode, synchronous=NORMAL appends the commit without an fsync;
  // FULL (the connection's setting) comes back for every other write.
  if (!synced) {
    if (absl::Status status = Exec("PRAGMA synchronous=NORMAL"); !status.ok()) {
      return status;
    }
  }
  absl::Status saved = SaveRoundLocked(run_id, round, run_state);
  if (!synced) {
    if (absl::Status status = Exec("PRAGMA synchronous=FULL"); !status.ok()) {
      return status;
    }
  }
  return saved;
}

absl::Status Store::SaveRoundLocked(const std::string& run_id,
                                    const RoundRecord& round,
                                    RunStatus::State run_state) {
  if (absl::Status status = Exec("BEGIN IMMEDIATE"); !status.ok()) {
    return status;
  }
  absl::Status result = [&]() -> absl::Status {
    Statement insert(db_,
                     "INSERT OR REPLACE INTO rounds (run_id, round, record) "
                     "VALUES (?, ?, ?)");
    if (!insert.ok()) return SqlError(db_, "prepare");
    insert.BindText(1, run_id);
    insert.BindInt(2, round.round());
    insert.BindBlob(3, round.SerializeAsString());
    if (sqlite3_step(insert.get()) != SQLITE_DONE) {
      return SqlError(db_, "save round");
    }
    Statement update(db_, "UPDATE runs SET state = ? WHERE run_id = ?");
    if (!update.ok()) return SqlError(db_, "prepare");
    update.BindInt(1, run_state);
    update.BindText(2, run_id);
    if (sqlite3_step(update.get()) != SQLITE_DONE) {
      return SqlError(db_, "update run");
    }
    return absl::OkStatus();
  }();
  if (!result.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return result;
  }
  return Exec("COMMIT");
}

absl::StatusOr<std::vector<Store::StoredRun>> Store::LoadRuns() {
  absl::MutexLock lock(&mu_);
  std::vector<StoredRun> runs;
  std::map<std::string, size_t> index;
  {
    Statement select(
        db_,
        "SELECT run_id, plan, state, message, created_ms FROM runs "
        "ORDER BY created_ms, run_id");
    if (!select.ok()) return SqlError(db_, "prepare");
    while (sqlite3_step(select.get()) == SQLITE_ROW) {
      StoredRun run;
      run.run_id = select.ColumnBytes(0);
      if (!run.plan.ParseFromString(select.ColumnBytes(1))) {
        return absl::DataLossError(
            absl::StrCat("run ", run.run_id, ": unreadable plan"));
      }
      run.state =
          static_cast<RunStatus::State>(sqlite3_column_int(select.get(), 2));
      run.message = select.ColumnBytes(3);
      run.created_unix_ms = sqlite3_column_int64(select.get(), 4);
      index[run.run_id] = runs.size();
      runs.push_back(std::move(run));
    }
  }
  Statement rounds(db_,
                   "SELECT run_id, record FROM rounds ORDER BY run_id, round");
  if (!rounds.ok()) return SqlError(db_, "prepare");
  while (sqlite3_step(rounds.get()) == SQLITE_ROW) {
    auto it = index.find(rounds.ColumnBytes(0));
    if (it == index.end()) continue;
    RoundRecord record;
    if (!record.ParseFromString(rounds.ColumnBytes(1))) {
      return absl::DataLossError("unreadable round record");
    }
    runs[it->second].rounds.push_back(std::move(record));
  }
  return runs;
}

}  // namespace echofed
