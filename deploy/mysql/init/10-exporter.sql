-- Runs once, on the first start of the compose MySQL (empty data volume).
-- A read-only user for mysqld-exporter. Development password: the compose stack only.
CREATE USER IF NOT EXISTS 'exporter'@'%' IDENTIFIED BY 'exporter' WITH MAX_USER_CONNECTIONS 3;
GRANT PROCESS, REPLICATION CLIENT, SELECT ON *.* TO 'exporter'@'%';
