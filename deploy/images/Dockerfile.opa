# OPA: the pinned build from scripts/bootstrap, on the base rootfs (no
# Python), as its own uid. Its API is a Unix socket for the gateway alone;
# the diagnostic address serves /health and /metrics only.
ARG BASE
FROM ${BASE}
RUN groupadd -g 10003 airlock-opa && useradd -u 10003 -g 10003 -M -d /nonexistent -s /usr/sbin/nologin airlock-opa \
 && mkdir -p /etc/airlock/opa /run/airlock/opa && chown 10003:10001 /run/airlock/opa && chmod 2750 /run/airlock/opa
COPY opa /usr/local/bin/opa
USER 10003:10003
ENTRYPOINT ["/usr/local/bin/opa"]
CMD ["version"]
# A verified bundle must be active: /health?bundles is 200 only then.
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8282 && printf 'GET /health?bundles HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3 | grep -q ' 200 '"]
