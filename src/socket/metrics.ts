import type { Server } from 'socket.io';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { UnreadBadges } from './badges.js';

/** Socket-server metrics, read from the live objects when scraped (nothing on the hot path). */
export function socketMetrics(io: Server, badges: UnreadBadges): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  new Gauge({
    name: 'unread_sync_socket_connections',
    help: 'Connected sockets on this server',
    registers: [registry],
    collect() {
      this.set(io.engine.clientsCount);
    },
  });
  new Gauge({
    name: 'unread_sync_socket_users',
    help: 'Users with at least one socket on this server (one shard subscription each)',
    registers: [registry],
    collect() {
      this.set(badges.connectedUsers().length);
    },
  });
  const counter = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  counter('unread_sync_socket_emits_total', 'total-unread-count-updated emits', () => badges.emitCount());
  counter('unread_sync_cache_hits_total', 'Badge reads answered from Redis', () => badges.reader.stats.hits);
  counter('unread_sync_cache_misses_total', 'Badge reads that needed a hydration', () => badges.reader.stats.misses);
  counter('unread_sync_fallback_reads_total', 'Badge reads answered by the database fallback', () => badges.reader.stats.fallbacks);
  return registry;
}
