// The cluster view: the members of the service, and per pipeline its leader and the owner of
// each partition (key-group range) with the offset it has applied through; polled every 2 s.
// A single instance is the one member, leader and owner of everything.
import { get } from '../api.js';
import { h, fill, problemBox, dataTable, repeat } from '../dom.js';
import { num, time } from '../format.js';

const POLL_MS = 2000;

export function renderCluster(main) {
  const members = dataTable(['Node', 'URL', 'Alive', 'Last seen'], []);
  const owners = dataTable(['Pipeline', 'Partition', 'Key groups', 'Leader', 'Owner', 'Applied offset'],
    ['Partition', 'Applied offset']);
  const node = h('p');
  const slot = h('div', { 'aria-live': 'polite' });
  fill(main,
    h('div.head', {}, h('h1', {}, 'Cluster')),
    node, slot,
    h('h2', {}, 'Members'), h('div.scroll', {}, members.table),
    h('h2', {}, 'Leaders and partition owners'), h('div.scroll', {}, owners.table));
  return repeat(POLL_MS, async () => {
    try {
      const view = await get('/v1/cluster');
      fill(node, 'This instance: ', h('code', {}, view.node));
      members.fill(view.members.map((m) => h('tr', {},
        h('th', { scope: 'row' }, m.node),
        h('td', {}, h('span', {}, m.url)),
        h('td', {}, h(`span.badge.${m.alive ? 'good' : 'bad'}`, {}, m.alive ? 'alive' : 'dead')),
        h('td', {}, time(Date.parse(m.last_seen))))));
      const rows = view.pipelines.flatMap((p) => p.partitions.map((part) => h('tr', {},
        h('th', { scope: 'row' }, h('a', { href: `#/p/${encodeURIComponent(p.name)}` }, p.name)),
        h('td.n', {}, num(part.id)),
        h('td', {}, h('span', {}, `${part.key_groups[0]}–${part.key_groups[1]}`)),
        h('td', {}, p.leader),
        h('td', {}, part.owner),
        h('td.n', {}, part.applied_offset === null ? '–' : num(part.applied_offset)))));
      owners.fill(rows.length ? rows : h('tr', {}, h('td', { colspan: 6 }, 'No pipeline yet.')));
      fill(slot);
    } catch (e) {
      fill(slot, problemBox(e));
    }
  });
}
