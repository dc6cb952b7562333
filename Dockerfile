# The controller alone (no Mininet, no Open vSwitch: those are on the
# hypervisors). Requirements are installed as scripts/setup.sh does it:
# Ryu 4.34 builds only with an old setuptools and no build isolation.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/vguard
COPY requirements-controller.txt .
RUN pip install 'setuptools<67' wheel \
 && pip install --no-build-isolation -r requirements-controller.txt
COPY controller/ controller/
COPY apps/ apps/

# An unprivileged user; the state directory is its own (a named volume
# takes this ownership when first created).
RUN useradd --system --uid 10001 --home-dir /var/lib/vguard vguard \
 && mkdir -p /var/lib/vguard /etc/vguard && chown vguard:vguard /var/lib/vguard
USER vguard
VOLUME /var/lib/vguard
EXPOSE 6653 8080

HEALTHCHECK --interval=30s --timeout=5s \
  CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/api/v1/health', timeout=3)"
ENTRYPOINT ["python", "-m", "controller"]
CMD ["--network", "/etc/vguard/network.yaml", \
     "--ofp-host", "0.0.0.0", "--ofp-port", "6653", \
     "--rest-host", "0.0.0.0", "--rest-port", "8080", \
     "--state-file", "/var/lib/vguard/policy.json", \
     "--token-file", "/run/secrets/vguard_api_token"]
