// Calls to the gateway's session API. Errors become ApiError with the server's words.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const SIGN_IN = 'You are not signed in: open the address the gateway printed (it ends with ?token=…).';

export async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'The gateway cannot be reached. Check your connection.');
  }
  let data = null;
  try { data = await response.json(); } catch { /* empty or not JSON */ }
  if (!response.ok) {
    const message = response.status === 401 ? SIGN_IN : (data && data.error) || `Error ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

export const listSessions = async () => (await api('GET', '/api/sessions')).sessions;
export const getSession = (id) => api('GET', `/api/sessions/${encodeURIComponent(id)}`);
export const createSession = (application) => api('POST', '/api/sessions', { application });
export const endSession = (id) => api('DELETE', `/api/sessions/${encodeURIComponent(id)}`);
export const listApplications = async () => (await api('GET', '/api/applications')).applications;

// Follow a session's progress (SSE) until it runs, fails or is gone; onUpdate gets each snapshot
// (with "progress" 0..1). Resolves with the last snapshot, or null when the session was deleted.
export function followSession(id, onUpdate) {
  return new Promise((resolve) => {
    const source = new EventSource(`/api/sessions/${encodeURIComponent(id)}/events`);
    source.addEventListener('session', (event) => {
      const session = JSON.parse(event.data);
      onUpdate(session);
      if (session.phase === 'running' || session.phase === 'failed') { source.close(); resolve(session); }
    });
    source.addEventListener('deleted', () => { source.close(); resolve(null); });
    // On a dropped stream EventSource reconnects by itself and gets the current state again.
  });
}
