# ferry image: API, control worker or host agent, chosen by FERRY_ROLE (see workers/main.ts).
FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ qemu-utils && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY . .
ENV FERRY_DATA_DIR=/data
EXPOSE 8080 9464
CMD ["node", "--import", "tsx", "workers/main.ts"]
