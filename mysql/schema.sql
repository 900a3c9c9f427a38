-- The notes app's schema. Applied by provision.sh as root over the local socket; safe to apply
-- again (nothing is dropped). Runs unchanged on MariaDB 10.11 and MySQL 8.

CREATE DATABASE IF NOT EXISTS notes
  CHARACTER SET utf8mb4
  COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS notes.notes (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  -- 1000 characters is the app's limit (notes/validation.py); the column says the same, so a
  -- client that skipped the app's check gets an error in strict mode, never a truncated note.
  body VARCHAR(1000) NOT NULL,
  -- TIMESTAMP is stored in UTC; the app sets its session time_zone to +00:00, so it reads UTC.
  created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id)
) ENGINE = InnoDB;
