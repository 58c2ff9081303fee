// Test app for tests/frameworks.rs: an Express app (express 4 from the npm registry, installed
// into node_modules/ by scripts/setup) through nginx. It listens on port 3000 as Express apps do;
// the loader moves it onto a unix socket.
const express = require('express');

const app = express();
app.use(express.urlencoded({ extended: false }));

app.get('/hello/:name', (req, res) => {
  res.type('text/plain').send(`hello ${req.params.name} from express\n`);
});

app.post('/form', (req, res) => {
  res.type('text/plain').send(`express got greeting=${req.body.greeting} name=${req.body.name}\n`);
});

app.get('/json', (req, res) => {
  res.json({ framework: 'express', items: [1, 2, 3], query: req.query.q });
});

app.use((req, res) => {
  res.status(404).type('text/plain').send(`express: no route for ${req.path}\n`);
});

app.listen(3000);
