"""`alignsam serve`: the tools as a web service and a web page (FastAPI + uvicorn; `pip install alignsam[serve]`).

    alignsam serve --model demo --sam-model demo            # then open http://127.0.0.1:8000/

- `Service` (`service.py`): the models, image sessions, request batching and every endpoint's work,
  usable in-process without HTTP.
- `create_app` (`app.py`): the FastAPI app over a service: pydantic models for every body, `/openapi.json`,
  `/docs` (offline), the page at `/`, bearer tokens, body and time limits.
- `ServeConfig` (`config.py`): the settings.

See docs/serve.md.
"""

from alignsam.serve.config import ServeConfig
from alignsam.serve.service import Service

__all__ = ["ServeConfig", "Service", "create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":  # FastAPI is imported only by those who serve over HTTP
        from alignsam.serve.app import create_app

        return create_app
    raise AttributeError(name)
