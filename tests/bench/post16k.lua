-- Scenario 4: every request is a POST with a 16 KiB body.
-- wrk adds the Content-Length header itself when a body is set.
wrk.method = "POST"
wrk.body = string.rep("x", 16384)
wrk.headers["Content-Type"] = "application/octet-stream"
