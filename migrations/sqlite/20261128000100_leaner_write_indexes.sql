-- Every acquire and release writes a session row and an audit entry; each
-- index on them is one more write per operation.
--
-- sessions_by_license_page (license_id, started_at, id) answers everything
-- sessions_by_license (license_id, started_at) did.
DROP INDEX sessions_by_license;

-- Seat operations by a machine carry no actor; only entries with one are
-- ever looked up by actor.
DROP INDEX audit_by_actor;
CREATE INDEX audit_by_actor ON audit_log (actor_id, id) WHERE actor_id IS NOT NULL;
