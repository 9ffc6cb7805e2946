# tokenbot's image: `docker build -t tokenbot .` (README, "Deploying").
# The build stage installs the locked dependencies (uv.lock, without the dev group) and
# tokenbot itself into a virtual environment; the runtime stage is that environment on a
# slim Python, run as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The uv the Makefile pins.
RUN pip install --no-cache-dir --disable-pip-version-check uv==0.13.9
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
# Dependencies first, in a layer of their own: a change to the code does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY bot ./bot
COPY storage ./storage
# --no-editable: tokenbot (the code and its migrations) goes into the environment itself,
# so the runtime stage needs nothing from /src.
RUN uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 tokenbot \
    && useradd --system --uid 10001 --gid tokenbot --home-dir /var/lib/tokenbot \
       --create-home --shell /usr/sbin/nologin tokenbot
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
# The working directory is the user's own: the default SQLite database (tokenbot.db)
# lands there. With PostgreSQL nothing is written to the container.
WORKDIR /var/lib/tokenbot
# Numeric, so that an orchestrator enforcing "run as non-root" can tell.
USER 10001:10001
# The public listener (/slack/*, /healthz). An internal one for /api/v1/* is opened with
# TOKENBOT_API_LISTEN (deploy/compose.yml uses 0.0.0.0:3001); never publish that one.
EXPOSE 3000
# No curl in the slim image: Python asks /healthz (no answer, or an error status,
# raises, and the check fails).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=4)"]
# SIGTERM (the default stop signal) drains requests and token deliveries: give
# `docker stop` a longer timeout than its default 10 s (compose: stop_grace_period).
ENTRYPOINT ["tokenbot"]
CMD ["serve", "--host", "0.0.0.0", "--port", "3000"]
