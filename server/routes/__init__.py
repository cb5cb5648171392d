"""HTTP routers, one per resource."""

from typing import Annotated

from fastapi import Path

#: A job id in a path: 16 lowercase hex characters.
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="Job id, as POST /v1/jobs returned it.")]
