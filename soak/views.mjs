// The views the soak keeps fresh over pgbench's tables: a one-row-per-account projection, a
// per-branch aggregate, and two joins of a parent table with the history it accumulates.
import { defineView, sql } from '../dist/index.js'

/** Each view's columns, for the soak's own comparison with the query. */
export const SOAK_COLUMNS = {
  soak_accounts: ['aid', 'bid', 'abalance'],
  soak_branch_balances: ['bid', 'accounts', 'balance'],
  soak_teller_activity: ['tid', 'bid', 'tbalance', 'transactions', 'delta_total'],
  soak_branch_activity: ['bid', 'bbalance', 'transactions', 'delta_total'],
}

export function soakViews() {
  return [
    defineView({
      name: 'soak_accounts',
      key: ['aid'],
      query: sql`SELECT aid, bid, abalance FROM pgbench_accounts`,
      sources: { pgbench_accounts: { aid: 'aid' } },
    }),
    defineView({
      name: 'soak_branch_balances',
      key: ['bid'],
      query: sql`
        SELECT bid, count(*) AS accounts, sum(abalance) AS balance
        FROM pgbench_accounts GROUP BY bid`,
      sources: { pgbench_accounts: { bid: 'bid' } },
    }),
    defineView({
      name: 'soak_teller_activity',
      key: ['tid'],
      query: sql`
        SELECT t.tid, t.bid, t.tbalance, count(h.tid) AS transactions,
               coalesce(sum(h.delta), 0) AS delta_total
        FROM pgbench_tellers t LEFT JOIN pgbench_history h ON h.tid = t.tid
        GROUP BY t.tid, t.bid, t.tbalance`,
      sources: { pgbench_tellers: { tid: 'tid' }, pgbench_history: { tid: 'tid' } },
    }),
    defineView({
      name: 'soak_branch_activity',
      key: ['bid'],
      query: sql`
        SELECT b.bid, b.bbalance, count(h.bid) AS transactions, coalesce(sum(h.delta), 0) AS delta_total
        FROM pgbench_branches b LEFT JOIN pgbench_history h ON h.bid = b.bid
        GROUP BY b.bid, b.bbalance`,
      sources: { pgbench_branches: { bid: 'bid' }, pgbench_history: { bid: 'bid' } },
    }),
  ]
}
