// The node's home page: what this node is, from GET /api/node.

const $ = (id) => document.getElementById(id);

async function show() {
  try {
    const res = await fetch("/api/node");
    const node = await res.json();
    $("node-id").textContent = node.nodeId;
    $("node-version").textContent = node.version;
    $("node-mode").textContent = [
      node.clustered ? "cluster member" : "single node",
      node.devMode ? "dev mode (pages mint their own tokens)" : "production (tokens come from your application)",
    ].join(", ");
    $("node-load").textContent = `${node.rooms} rooms, ${node.connections} connections`;
    $("node-summary").textContent = `${node.nodeId} · v${node.version}`;
    $("token-hint").hidden = node.devMode;
  } catch (e) {
    $("node-summary").textContent = `the node did not answer: ${e.message}`;
  }
}

show();
