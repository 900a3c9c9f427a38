"""The server as mysql/server.cnf, schema.sql, grants.sql and provision.sh leave it."""

from __future__ import annotations

import shutil
import subprocess

import pymysql
import pytest

from notes.failures import classify


def variables(db, *names: str) -> dict[str, str]:
    quoted = ", ".join(f"'{n}'" for n in names)
    out = db.sql(f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({quoted})")
    return dict(line.split("\t", 1) for line in out.splitlines())


def connect_app(db, **kwargs) -> pymysql.Connection:
    args = {
        "host": "127.0.0.1",
        "port": db.port,
        "user": "app",
        "password": db.web_password_file.read_text().strip(),
        "database": "notes",
        "connect_timeout": 2,
        "ssl_ca": str(db.tls.ca),
    }
    return pymysql.connect(**{**args, **kwargs})


def test_server_settings(db):
    assert variables(
        db,
        "bind_address",
        "skip_name_resolve",
        "require_secure_transport",
        "local_infile",
        "innodb_flush_log_at_trx_commit",
        "sync_binlog",
        "character_set_server",
        "have_ssl",
    ) == {
        "bind_address": "127.0.0.1",  # 10.0.2.10 in server.cnf, overridden by serve.sh
        "skip_name_resolve": "ON",
        "require_secure_transport": "ON",
        "local_infile": "OFF",
        "innodb_flush_log_at_trx_commit": "1",
        "sync_binlog": "1",
        "character_set_server": "utf8mb4",
        "have_ssl": "YES",
    }


def test_schema(db):
    table = db.sql("SHOW CREATE TABLE notes.notes").replace("\\n", "\n")
    assert "`body` varchar(1000) NOT NULL" in table
    assert "`created_at` timestamp(3) NOT NULL DEFAULT current_timestamp(3)" in table
    assert "ON UPDATE" not in table, "a note's time is when it was written"
    assert "CHARSET=utf8mb4" in table


def test_app_connects_over_tls(db):
    with connect_app(db) as conn, conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
        (_, version) = cur.fetchone()
        assert version in ("TLSv1.2", "TLSv1.3")


def test_connection_without_tls_is_refused_by_the_server(db):
    with pytest.raises(pymysql.err.OperationalError) as raised:
        connect_app(db, ssl_ca=None, ssl_disabled=True)
    assert raised.value.args[0] == 1045
    assert classify(raised.value, tls=False).kind == "tls"


def test_app_account_has_row_access_to_notes_only(db):
    notes, usage = sorted(db.sql("SHOW GRANTS FOR 'app'@'127.0.0.1'").splitlines())
    assert notes == "GRANT SELECT, INSERT, UPDATE, DELETE ON `notes`.* TO `app`@`127.0.0.1`"
    assert usage.startswith("GRANT USAGE ON *.* TO `app`@`127.0.0.1` IDENTIFIED BY PASSWORD")
    assert usage.endswith(" REQUIRE SSL")


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE notes.other (id INT)",
        "DROP TABLE notes.notes",
        "ALTER TABLE notes.notes ADD COLUMN x INT",
        "SELECT User FROM mysql.user",
        "CREATE DATABASE other",
    ],
)
def test_app_account_cannot(db, statement):
    with (
        connect_app(db) as conn,
        conn.cursor() as cur,
        pytest.raises(pymysql.err.OperationalError) as raised,
    ):
        cur.execute(statement)
    # 1142: command denied on a table; 1044: access denied to a database.
    assert raised.value.args[0] in (1142, 1044)


def test_app_account_sees_no_other_threads(db):
    # No PROCESS privilege: the process list shows the account's own connections only.
    with connect_app(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT user FROM information_schema.processlist")
        assert cur.fetchall() == (("app",),)


def test_only_root_and_app_accounts_and_no_test_database(db):
    accounts = sorted(db.sql("SELECT User, Host FROM mysql.user").splitlines())
    assert accounts == ["app\t127.0.0.1", "mariadb.sys\tlocalhost", "root\tlocalhost"]
    assert db.sql("SHOW DATABASES LIKE 'test%'") == ""
    assert db.sql("SELECT COUNT(*) FROM mysql.db WHERE Db LIKE 'test%'").strip() == "0"
    # mariadb-install-db also grants PROXY to the --user account on this machine's host name;
    # that account is gone, and its grant must go with it, or an account made later under that
    # name would inherit it.
    assert db.sql("SELECT User, Host FROM mysql.proxies_priv").splitlines() == ["root\tlocalhost"]


def test_root_only_through_the_unix_socket(db):
    plugin = db.sql("SELECT JSON_EXTRACT(Priv, '$.auth_or') FROM mysql.global_priv "
                    "WHERE User = 'root'")  # fmt: skip
    assert "unix_socket" in plugin
    with pytest.raises(pymysql.err.OperationalError) as raised:
        pymysql.connect(host="127.0.0.1", port=db.port, user="root", password="",
                        ssl_ca=str(db.tls.ca), connect_timeout=2)  # fmt: skip
    # 1698: MariaDB matched root@localhost, whose unix_socket login cannot succeed over TCP.
    assert raised.value.args[0] in (1045, 1698)
    assert classify(raised.value).kind == "auth"


def test_password_files_are_the_owners_alone(db):
    for path in (db.db_password_file, db.web_password_file):
        assert path.stat().st_mode & 0o777 == 0o600
    assert db.db_password_file.read_text() == db.web_password_file.read_text()
    assert len(db.web_password_file.read_text().strip()) == 48


def test_provision_again_changes_nothing(db):
    password = db.web_password_file.read_text()
    done = subprocess.run(db.provision_args(), check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "already provisioned; nothing changed" in done.stdout
    assert db.web_password_file.read_text() == password


def test_provision_refuses_a_directory_it_did_not_make(db, work_dir):
    foreign = work_dir / "foreign"
    (foreign / "data").mkdir(parents=True)
    (foreign / "data" / "ibdata1").write_text("someone else's")
    args = db.provision_args()
    args[args.index("--datadir") + 1] = str(foreign / "data")
    args[args.index("--db-password-file") + 1] = str(foreign / "db-pw")
    args[args.index("--web-password-file") + 1] = str(foreign / "web-pw")
    done = subprocess.run(args, check=False, capture_output=True, text=True)
    assert done.returncode == 1
    assert "is not empty and was not provisioned by this script" in done.stderr
    assert (foreign / "data" / "ibdata1").read_text() == "someone else's"
    assert not (foreign / "db-pw").exists()


@pytest.mark.parametrize(
    ("option", "use", "message"),
    [
        ("--tls-key", "other_key", "does not match --tls-cert"),
        ("--tls-ca", "other_ca", "is not signed by --tls-ca"),
        ("--app-host", "10.0.1.10'; DROP", "is not an IP address"),
        # Wildcards would open the account to more hosts than the app's; a name never matches
        # under skip-name-resolve.
        ("--app-host", "%", "is not an IP address"),
        ("--app-host", "10.0.1.%", "is not an IP address"),
        ("--app-host", "web", "is not an IP address"),
        ("--app-host", "10.0.1.256", "is not an IP address"),
        ("--web-password-owner", "root:no-such-group", "no such group 'no-such-group'"),
        ("--port", "33o6", "is not a port number"),
        ("--port", "70000", "is not a port number (1-65535)"),
        ("--bind-address", "0.0.0.0 --skip-grant-tables", "is not an address"),
        ("--user", "no-such-user", "no such OS user"),
        ("--tls-key", "root_only_key", "user mysql cannot read"),
    ],
)
def test_provision_rejects_bad_options(db, other_tls, work_dir, option, use, message):
    args = db.provision_args()
    root_only = work_dir / "root-only"
    root_only.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(db.tls.key, root_only / "server-key.pem")
    value = {
        "other_key": str(other_tls.key),
        "other_ca": str(other_tls.ca),
        "root_only_key": str(root_only / "server-key.pem"),
    }.get(use, use)
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    # Fresh paths, so that only the bad option can stop it.
    args[args.index("--datadir") + 1] = str(work_dir / "never-made" / "data")
    args[args.index("--db-password-file") + 1] = str(work_dir / "never-made" / "db-pw")
    args[args.index("--web-password-file") + 1] = str(work_dir / "never-made" / "web-pw")
    done = subprocess.run(args, check=False, capture_output=True, text=True)
    assert done.returncode == 1
    assert message in done.stderr
    assert not (work_dir / "never-made").exists()


def test_provision_requires_every_option(db):
    args = db.provision_args()
    i = args.index("--app-host")
    del args[i : i + 2]
    done = subprocess.run(args, check=False, capture_output=True, text=True)
    assert (done.returncode, done.stderr.strip()) == (
        1,
        "provision.sh: error: --app-host is required (see --help)",
    )
