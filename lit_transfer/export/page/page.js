// The page of `python -m lit_transfer export --format web`: both stages in the browser, and a transfer to new
// symbols taught by drawing. TensorFlow.js runs the networks (runtime/, CPU backend); models.js holds them.
//
// Teach: each class is the mean of its examples' feature vectors; a drawing gets the class whose mean is most
// similar (cosine). That is Teachable Machine v1's idea (a frozen network's features, then nearest neighbours):
// nothing to tune, learnt at once, and it works from one example. The features are stage one's network up to its
// last layer (fc1, 128 numbers, frozen); the control is the same learner on the raw 784 pixels.
// benchmarks/web_teach.py measures both, and why fc1 rather than the convolutions' output (docs/web.md).
"use strict";

const MAX_CLASSES = 10;
const MIN_CLASSES = 2;
const MIN_EXAMPLES = 3;
const PAD = 280; // drawing pads: 280x280, black strokes 22 pixels wide on white (as tests/symbols.py draws)
const STROKE = 22;

const litTransfer = (() => {
  const spec = window.LIT_TRANSFER_MODELS;
  const models = {};
  let featureModel = null;

  function decode(base64) {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    return bytes.buffer;
  }

  async function load() {
    await tf.setBackend("cpu");
    for (const [key, stage] of Object.entries(spec.stages)) {
      const artifacts = { modelTopology: stage.topology, weightSpecs: stage.weightSpecs, weightData: decode(stage.weights) };
      models[key] = await tf.loadLayersModel(tf.io.fromMemory(artifacts));
    }
    featureModel = tf.model({ inputs: models.one.inputs, outputs: models.one.getLayer(spec.features).output });
  }

  // uint8 28x28 images (a list of Uint8Array(784)) -> float32 (N, 28, 28, 1), pixel / 255 (the notebook's x /= 255)
  function batch(images) {
    const data = new Float32Array(images.length * 784);
    images.forEach((image, i) => image.forEach((v, j) => (data[i * 784 + j] = v / 255)));
    return tf.tensor4d(data, [images.length, 28, 28, 1]);
  }

  const run = (model, images) => tf.tidy(() => model.predict(batch(images)).arraySync());
  const predict = (stage, images) => run(models[stage], images);
  const features = (images) => run(featureModel, images);
  const pixels = (images) => images.map((image) => Array.from(image, (v) => v / 255));

  function unit(vector) {
    const norm = Math.hypot(...vector) || 1;
    return vector.map((v) => v / norm);
  }

  // classes: [{name, images: [Uint8Array(784)]}] -> one learner per input kind: unit class means
  function teach(classes) {
    const learners = {};
    for (const [kind, embed] of [["features", features], ["pixels", pixels]]) {
      learners[kind] = classes.map(({ images }) => {
        const vectors = embed(images).map(unit);
        return unit(vectors[0].map((_, d) => vectors.reduce((sum, v) => sum + v[d], 0) / vectors.length));
      });
    }
    return { names: classes.map((c) => c.name), learners };
  }

  // -> {features: {name, similarity}, pixels: {...}} for one image
  function classify(taught, image) {
    const answer = {};
    for (const [kind, embed] of [["features", features], ["pixels", pixels]]) {
      const vector = unit(embed([image])[0]);
      const similarities = taught.learners[kind].map((mean) => mean.reduce((s, m, d) => s + m * vector[d], 0));
      const best = similarities.indexOf(Math.max(...similarities));
      answer[kind] = { name: taught.names[best], similarity: similarities[best] };
    }
    return answer;
  }

  return { spec, load, predict, features, teach, classify, toMnist: LitTransferRule.toMnist };
})();
window.litTransfer = litTransfer;

// ---- the page -------------------------------------------------------------------------------------------------

function say(where, text) {
  const box = document.getElementById(where);
  box.textContent = text;
  box.hidden = !text;
}

// A drawing pad: black strokes on white; ``onStroke`` after each stroke; image files dropped on it are passed to
// ``onFile``.
function makePad(canvas, onStroke, onFile) {
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const clear = () => {
    context.fillStyle = "white";
    context.fillRect(0, 0, PAD, PAD);
    canvas.dataset.ink = "";
  };
  clear();
  let last = null;
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [((event.clientX - box.left) * PAD) / box.width, ((event.clientY - box.top) * PAD) / box.height];
  };
  const line = (from, to) => {
    Object.assign(context, { strokeStyle: "black", lineWidth: STROKE, lineCap: "round", lineJoin: "round" });
    context.beginPath();
    context.moveTo(...from);
    context.lineTo(...to);
    context.stroke();
    canvas.dataset.ink = "yes";
  };
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    last = at(event);
    line(last, last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (last === null) return;
    const point = at(event);
    line(last, point);
    last = point;
  });
  const end = () => {
    if (last === null) return;
    last = null;
    onStroke();
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  canvas.addEventListener("dragover", (event) => event.preventDefault());
  canvas.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer.files.length) onFile(event.dataTransfer.files[0]);
  });
  return {
    clear,
    blank: () => !canvas.dataset.ink,
    image: () => litTransfer.toMnist(context.getImageData(0, 0, PAD, PAD).data, PAD, PAD),
  };
}

// An image file -> its 28x28 input by the rule; a file that is not an image is an Error with a message
async function fileToMnist(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    throw new Error(`${file.name} is not an image the browser can read: drop a PNG, JPEG, GIF or WebP file`);
  }
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  return litTransfer.toMnist(context.getImageData(0, 0, bitmap.width, bitmap.height).data, bitmap.width, bitmap.height);
}

function showInput(canvas, image) {
  const context = canvas.getContext("2d");
  const data = context.createImageData(28, 28);
  image.forEach((v, i) => data.data.set([v, v, v, 255], 4 * i));
  context.putImageData(data, 0, 0);
}

function showBars(element, classes, probabilities) {
  element.replaceChildren();
  const best = probabilities.indexOf(Math.max(...probabilities));
  classes.forEach((name, i) => {
    const row = document.createElement("div");
    row.className = i === best ? "bar best" : "bar";
    row.dataset.class = name;
    row.dataset.probability = probabilities[i];
    const percent = (100 * probabilities[i]).toFixed(1);
    row.innerHTML = `<span class="name"></span><span class="fill" style="width:${percent}%"></span><span class="value">${percent}%</span>`;
    row.querySelector(".name").textContent = name;
    element.append(row);
  });
}

function setUpTry() {
  const { stages } = litTransfer.spec;
  document.getElementById("stage-one-title").textContent = `Stage one: all layers trained on ${stages.one.classes.join(" ")}`;
  document.getElementById("stage-two-title").textContent =
    `Stage two: stage one's convolutions frozen, a new head trained on ${stages.two.classes.join(" ")}`;
  const answer = (image) => {
    showInput(document.getElementById("try-input"), image);
    for (const key of ["one", "two"]) {
      showBars(document.getElementById(`try-stage-${key}`), stages[key].classes, litTransfer.predict(key, [image])[0]);
    }
    document.getElementById("try-answers").hidden = false;
  };
  const pad = makePad(
    document.getElementById("try-pad"),
    () => {
      try {
        say("try-message", "");
        answer(pad.image());
      } catch (err) {
        say("try-message", err.message);
      }
    },
    async (file) => {
      try {
        say("try-message", "");
        pad.clear();
        answer(await fileToMnist(file));
      } catch (err) {
        say("try-message", err.message);
      }
    },
  );
  document.getElementById("try-clear").addEventListener("click", () => {
    pad.clear();
    say("try-message", "");
    document.getElementById("try-answers").hidden = true;
  });
  document.getElementById("try-file").addEventListener("change", async (event) => {
    const [file] = event.target.files;
    if (!file) return;
    try {
      say("try-message", "");
      answer(await fileToMnist(file));
    } catch (err) {
      say("try-message", err.message);
    }
    event.target.value = "";
  });
}

function setUpTeach() {
  const list = document.getElementById("classes");
  const cards = [];
  let taught = null;

  const forget = () => {
    taught = null;
    document.getElementById("teach-test").hidden = true;
  };

  function addCard(name) {
    if (cards.length >= MAX_CLASSES) {
      say("teach-message", `At most ${MAX_CLASSES} classes: remove one before adding another.`);
      return;
    }
    say("teach-message", "");
    const card = document.createElement("div");
    card.className = "card";
    card.innerHTML = `
      <input class="class-name" type="text" maxlength="20" placeholder="class name" aria-label="class name">
      <canvas class="pad" width="${PAD}" height="${PAD}" aria-label="draw an example"></canvas>
      <div class="row"><button class="add-example">Add example</button><button class="clear">Clear</button>
      <button class="remove" title="remove this class">Remove class</button></div>
      <div class="count">0 examples</div><div class="examples"></div>`;
    card.querySelector(".class-name").value = name;
    const entry = { card, images: [] };
    const counted = () => {
      card.querySelector(".count").textContent = `${entry.images.length} example${entry.images.length === 1 ? "" : "s"}`;
    };
    const keep = (image) => {
      entry.images.push(image);
      const thumb = document.createElement("canvas");
      Object.assign(thumb, { width: 28, height: 28, className: "thumb" });
      showInput(thumb, image);
      card.querySelector(".examples").append(thumb);
      counted();
      forget();
    };
    const pad = makePad(
      card.querySelector(".pad"),
      () => {},
      async (file) => {
        try {
          say("teach-message", "");
          keep(await fileToMnist(file));
        } catch (err) {
          say("teach-message", err.message);
        }
      },
    );
    card.querySelector(".add-example").addEventListener("click", () => {
      if (pad.blank()) {
        say("teach-message", "Draw an example in the box first, then add it.");
        return;
      }
      try {
        say("teach-message", "");
        keep(pad.image());
        pad.clear();
      } catch (err) {
        say("teach-message", err.message);
      }
    });
    card.querySelector(".clear").addEventListener("click", () => pad.clear());
    card.querySelector(".remove").addEventListener("click", () => {
      cards.splice(cards.indexOf(entry), 1);
      card.remove();
      forget();
      say("teach-message", "");
    });
    card.querySelector(".class-name").addEventListener("input", forget);
    cards.push(entry);
    list.append(card);
  }

  function problem() {
    if (cards.length < MIN_CLASSES) return `Teach at least ${MIN_CLASSES} classes: add a class.`;
    const names = cards.map((c) => c.card.querySelector(".class-name").value.trim());
    const unnamed = names.indexOf("");
    if (unnamed >= 0) return `Class ${unnamed + 1} has no name: type one.`;
    const twice = names.find((n, i) => names.indexOf(n) !== i);
    if (twice !== undefined) return `Two classes are called "${twice}": give each its own name.`;
    const few = cards.find((c) => c.images.length < MIN_EXAMPLES);
    if (few) {
      const name = few.card.querySelector(".class-name").value.trim();
      return `"${name}" has ${few.images.length} example${few.images.length === 1 ? "" : "s"}: draw at least ${MIN_EXAMPLES}.`;
    }
    return null;
  }

  document.getElementById("add-class").addEventListener("click", () => addCard(""));
  document.getElementById("teach-button").addEventListener("click", () => {
    const wrong = problem();
    if (wrong) {
      say("teach-message", wrong);
      forget();
      return;
    }
    const classes = cards.map((c) => ({ name: c.card.querySelector(".class-name").value.trim(), images: c.images }));
    const start = performance.now();
    taught = litTransfer.teach(classes);
    const ms = performance.now() - start;
    const examples = classes.reduce((n, c) => n + c.images.length, 0);
    say("teach-message", "");
    const done = document.getElementById("teach-done");
    done.textContent = `Taught ${classes.length} classes from ${examples} examples in ${ms.toFixed(0)} ms. Draw to test both.`;
    done.dataset.ms = ms;
    document.getElementById("teach-test").hidden = false;
    testPad.clear();
    document.getElementById("teach-answers").hidden = true;
  });

  const testPad = makePad(
    document.getElementById("test-pad"),
    () => test(() => testPad.image()),
    (file) => test(() => fileToMnist(file)),
  );
  async function test(image) {
    if (!taught) return;
    try {
      say("teach-message", "");
      const answer = litTransfer.classify(taught, await image());
      for (const kind of ["features", "pixels"]) {
        const box = document.getElementById(`answer-${kind}`);
        box.textContent = answer[kind].name;
        box.dataset.similarity = answer[kind].similarity.toFixed(3);
      }
      document.getElementById("teach-answers").hidden = false;
    } catch (err) {
      say("teach-message", err.message);
    }
  }
  document.getElementById("test-clear").addEventListener("click", () => {
    testPad.clear();
    document.getElementById("teach-answers").hidden = true;
  });
  for (const name of ["+", "−", "×"]) addCard(name); // measured: fc1 features beat pixels most on these
}

litTransfer
  .load()
  .then(() => {
    setUpTry();
    setUpTeach();
    document.body.dataset.ready = "yes";
  })
  .catch((err) => {
    say("load-message", `The networks could not be loaded: ${err.message}`);
  });
