import { Counter, type Registry } from 'prom-client';

/** A counter registered on the bridge's registry (sources register theirs in observe()). */
export function counter(registry: Registry, name: string, help: string): Counter {
  return new Counter({ name, help, registers: [registry] });
}
