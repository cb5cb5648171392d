"""lrtune trainer-side client: wire protocol, HTTP client and training-loop callback."""
