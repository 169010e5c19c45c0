# t38gw in a container: `docker run -v $PWD/t38gw.toml:/etc/t38gw.toml -v $PWD/archive:/var/lib/t38gw \
#   --network host t38gw` (host networking keeps SIP and the UDPTL port range simple).
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libtiff6 libspandsp2 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/t38gw
COPY pyproject.toml README.md ./
COPY t38gw ./t38gw
COPY udptl ./udptl
COPY imaging ./imaging
COPY sip ./sip
COPY rtp ./rtp
RUN pip install --no-cache-dir .
RUN useradd --system --home /var/lib/t38gw t38gw && mkdir -p /var/lib/t38gw && chown t38gw /var/lib/t38gw
USER t38gw
WORKDIR /var/lib/t38gw
VOLUME ["/var/lib/t38gw"]
EXPOSE 5060/udp 5060/tcp 8080/tcp
ENTRYPOINT ["t38gw"]
CMD ["serve", "--config", "/etc/t38gw.toml"]
