// The demo page, kept in a module so `tsc` ships it in dist without a copy step.
export const DEMO_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>unread-sync demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 15px system-ui, sans-serif; margin: 2rem auto; max-width: 46rem; color: #222; }
  header { display: flex; align-items: center; gap: 1rem; }
  .badge { display: inline-block; min-width: 1.6em; padding: .15em .5em; border-radius: 1em; background: #d33;
           color: #fff; font-weight: 700; text-align: center; }
  .badge.zero { background: #999; }
  table { border-collapse: collapse; width: 100%; margin-top: 1rem; }
  td, th { padding: .4rem .5rem; border-bottom: 1px solid #eee; text-align: left; }
  button { cursor: pointer; }
  #status { color: #666; font-size: 13px; }
</style>
</head>
<body>
<header>
  <label>You are <select id="user" data-testid="user-select"></select></label>
  <span>unread <span id="badge" class="badge zero" data-testid="badge">–</span></span>
  <span id="rooms-count" data-testid="unread-rooms"></span>
</header>
<p id="status" data-testid="status">connecting…</p>
<table>
  <thead><tr><th>room with</th><th>unread</th><th></th></tr></thead>
  <tbody id="rooms"></tbody>
</table>
<script src="/socket.io/socket.io.js"></script>
<script>
(() => {
  const $ = (id) => document.getElementById(id);
  let users = [], rooms = [], me = null, socket = null, lastSeq = -1, counts = {};
  const name = (id) => (users.find((u) => u.id === id) || { name: id }).name;
  const post = (path, body) => fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body) }).then((r) => r.json());

  function render(total, unreadRooms) {
    const b = $('badge');
    b.textContent = String(total);
    b.className = 'badge' + (total === 0 ? ' zero' : '');
    $('rooms-count').textContent = unreadRooms + ' room(s) with unread';
    const tbody = $('rooms');
    tbody.textContent = '';
    for (const r of rooms.filter((r) => r.userId === me || r.companyId === me)) {
      const other = r.userId === me ? r.companyId : r.userId;
      const tr = document.createElement('tr');
      tr.dataset.room = r.id;
      const cell = (el) => { const td = document.createElement('td'); td.append(el); tr.append(td); return td; };
      cell(document.createTextNode(name(other)));
      const n = document.createElement('span');
      n.dataset.testid = 'room-unread-' + r.id;
      n.textContent = String(counts[r.id] || 0);
      cell(n);
      const actions = document.createElement('span');
      const button = (label, testid, fn) => {
        const el = document.createElement('button');
        el.textContent = label; el.dataset.testid = testid; el.onclick = fn; actions.append(el, ' ');
      };
      button('send message to ' + name(me), 'send-to-me-' + r.id,
        () => post('/demo/send', { roomId: r.id, senderId: other, receiverId: me }));
      button('send message to ' + name(other), 'send-to-other-' + r.id,
        () => post('/demo/send', { roomId: r.id, senderId: me, receiverId: other }));
      button('open room', 'open-' + r.id, () => post('/demo/open', { roomId: r.id, userId: me }));
      cell(actions);
      tbody.append(tr);
    }
  }

  function refreshRooms() {
    socket.emit('get-unread-counts', {}, (reply) => {
      if (!reply || reply.error) { $('status').textContent = 'error: ' + (reply && reply.error); return; }
      if (reply.seq < lastSeq) return;
      lastSeq = reply.seq; counts = reply.rooms;
      render(reply.totalUnreadCount, reply.unreadRooms);
    });
  }

  async function connect(userId) {
    if (socket) socket.disconnect();
    me = userId; lastSeq = -1; counts = {};
    render(0, 0);
    $('badge').textContent = '–';
    const getToken = (cb) => post('/demo/token', { userId }).then((r) => cb({ token: r.token }));
    socket = io({ auth: getToken, transports: ['websocket'] });
    socket.on('connect', () => { $('status').textContent = 'connected as ' + name(userId); });
    socket.on('connect_error', (err) => { $('status').textContent = 'connect error: ' + err.message; });
    socket.on('total-unread-count-updated', (p) => {
      // Keep the highest seq: never let an older total replace a newer one.
      if (p.seq <= lastSeq) return;
      lastSeq = p.seq;
      render(p.totalUnreadCount, p.unreadRooms);
      refreshRooms();
    });
  }

  fetch('/demo/users').then((r) => r.json()).then((d) => {
    users = d.users; rooms = d.rooms;
    const sel = $('user');
    for (const u of users) {
      const o = document.createElement('option');
      o.value = u.id; o.textContent = u.name + ' (' + u.kind + ')';
      sel.append(o);
    }
    sel.onchange = () => connect(sel.value);
    const wanted = new URLSearchParams(location.search).get('user');
    if (wanted && users.some((u) => u.id === wanted)) sel.value = wanted;
    connect(sel.value);
  });
})();
</script>
</body>
</html>
`;
