-- Accounts of the notes database. Applied by provision.sh as root over the local socket, once,
-- on a freshly initialised data directory. Runs unchanged on MariaDB 10.11 and MySQL 8.
--
-- Two things are filled in by provision.sh before the file reaches the server:
--   @APP_PASSWORD@      the generated password (never committed, never on a command line);
--   'app'@'10.0.1.10'   the host part is replaced by --app-host where it differs (the test
--                       suite connects from 127.0.0.1); 10.0.1.10 is the web host of the lab.

-- The app's account: only from the web host, only over TLS (also enforced server-wide by
-- require_secure_transport), and only row access to its own database: no DDL, no FILE, no
-- PROCESS, no GRANT OPTION, nothing on other schemas.
CREATE USER 'app'@'10.0.1.10' IDENTIFIED BY '@APP_PASSWORD@' REQUIRE SSL;
GRANT SELECT, INSERT, UPDATE, DELETE ON notes.* TO 'app'@'10.0.1.10';

-- What older installers leave behind. mariadb-install-db --skip-test-db and MySQL 8's
-- --initialize create none of it; the statements make sure of it on any server.
DROP USER IF EXISTS ''@'localhost';
DROP DATABASE IF EXISTS test;
DELETE FROM mysql.db WHERE Db = 'test' OR Db LIKE 'test\_%';
-- mariadb-install-db grants PROXY ... WITH GRANT OPTION to root and to '<--user>'@'<host name>',
-- an account it never creates: one made later under that name would inherit the grant. Only
-- root@localhost keeps it.
DELETE FROM mysql.proxies_priv WHERE NOT (User = 'root' AND Host = 'localhost');

FLUSH PRIVILEGES;
