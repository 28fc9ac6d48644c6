// Any image as the network's input: lit_transfer/images/rule.py, step for step, in the browser.
//
// The same rule gives the same 28x28 input for the same image file, to the bit (tests/test_web.py checks it):
// the greys, the alpha compositing and the Lanczos resize are Pillow's own integer arithmetic (Pillow's
// Convert.c, AlphaComposite.c and Resample.c), written out here because no browser API resizes like Pillow.
// One difference: a browser decodes every image to RGBA, so "28x28 with one channel, used as it is" reads here
// as "28x28 and every pixel grey and opaque".
"use strict";

const LitTransferRule = (() => {
  const SIZE = 28; // the network's input
  const BOX = 20; // the longer side of the digit inside it
  const INK = 32; // grey level (after inversion) above which a pixel counts as ink when cropping

  // Pillow: L = (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16
  const grey = (r, g, b) => (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;

  // Pillow's Image.alpha_composite(white paper, image), per channel (7 extra bits of precision)
  function onPaper(c, a) {
    if (a === 0) return 255;
    const coef1 = Math.floor((a * 255 * 255 * 128) / (255 * 255));
    const coef2 = 255 * 128 - coef1;
    const tmp = c * coef1 + 255 * coef2 + (0x80 << 7);
    return (((tmp >>> 8) + tmp) >>> 8) >>> 7;
  }

  function toGrey(rgba, width, height) {
    const out = new Uint8Array(width * height);
    for (let i = 0; i < width * height; i++) {
      const a = rgba[4 * i + 3];
      const [r, g, b] = [0, 1, 2].map((k) => (a === 255 ? rgba[4 * i + k] : onPaper(rgba[4 * i + k], a)));
      out[i] = grey(r, g, b);
    }
    return out;
  }

  function isMnistLike(rgba, width, height) {
    if (width !== SIZE || height !== SIZE) return false;
    for (let i = 0; i < rgba.length; i += 4) {
      if (rgba[i] !== rgba[i + 1] || rgba[i] !== rgba[i + 2] || rgba[i + 3] !== 255) return false;
    }
    return true;
  }

  // torch.median: the lower of the two middle values
  function median(values) {
    const sorted = Float64Array.from(values).sort();
    return sorted[Math.floor((sorted.length - 1) / 2)];
  }

  // Pillow's Resample.c for 8-bit images: Lanczos (support 3), coefficients in fixed point with 22 bits
  const PRECISION_BITS = 32 - 8 - 2;
  const sinc = (x) => (x === 0 ? 1 : Math.sin(x * Math.PI) / (x * Math.PI));
  const lanczos = (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0);

  function coefficients(inSize, outSize) {
    const scale = inSize / outSize;
    const filterscale = Math.max(scale, 1);
    const support = 3 * filterscale;
    const ksize = Math.ceil(support) * 2 + 1;
    const bounds = [];
    const kk = [];
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      const ss = 1 / filterscale;
      const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
      const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
      const k = new Float64Array(ksize);
      let ww = 0;
      for (let x = 0; x < xmax; x++) {
        const w = lanczos((x + xmin - center + 0.5) * ss);
        k[x] = w;
        ww += w;
      }
      const fixed = new Int32Array(ksize);
      for (let x = 0; x < ksize; x++) {
        const w = x < xmax && ww !== 0 ? k[x] / ww : k[x];
        fixed[x] = Math.trunc(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
      }
      bounds.push([xmin, xmax]);
      kk.push(fixed);
    }
    return { bounds, kk };
  }

  function clip8(value) {
    if (value >= 2 ** (PRECISION_BITS + 8)) return 255;
    if (value <= 0) return 0;
    return Math.floor(value / 2 ** PRECISION_BITS);
  }

  // one pass along rows (horizontal) or columns; sums exceed 32 bits, so plain (exact) doubles
  function pass(pixels, width, height, outSize, horizontal) {
    const { bounds, kk } = coefficients(horizontal ? width : height, outSize);
    const [w, h] = horizontal ? [outSize, height] : [width, outSize];
    const out = new Uint8Array(w * h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const [min, count] = bounds[horizontal ? x : y];
        const k = kk[horizontal ? x : y];
        let sum = 2 ** (PRECISION_BITS - 1);
        for (let i = 0; i < count; i++) {
          sum += (horizontal ? pixels[y * width + min + i] : pixels[(min + i) * width + x]) * k[i];
        }
        out[y * w + x] = clip8(sum);
      }
    }
    return out;
  }

  function resize(pixels, width, height, outWidth, outHeight) {
    let out = pixels;
    if (outWidth !== width) out = pass(out, width, height, outWidth, true);
    if (outHeight !== height) out = pass(out, outWidth, height, outHeight, false);
    return out;
  }

  // Python's round(): halves to even
  function roundHalfEven(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  // ``rgba`` (Uint8ClampedArray, as a canvas' getImageData gives it) -> Uint8Array(784), or throws when blank
  function toMnist(rgba, width, height) {
    if (isMnistLike(rgba, width, height)) return Uint8Array.from({ length: SIZE * SIZE }, (_, i) => rgba[4 * i]);
    let pixels = toGrey(rgba, width, height);
    const border = [];
    for (let x = 0; x < width; x++) border.push(pixels[x], pixels[(height - 1) * width + x]);
    for (let y = 0; y < height; y++) border.push(pixels[y * width], pixels[y * width + width - 1]);
    if (median(border) > 127) pixels = pixels.map((v) => 255 - v); // light background: MNIST is light on dark
    let [top, left, bottom, right] = [height, width, -1, -1];
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        if (pixels[y * width + x] > INK) {
          top = Math.min(top, y);
          bottom = Math.max(bottom, y);
          left = Math.min(left, x);
          right = Math.max(right, x);
        }
      }
    }
    if (bottom < 0) throw new Error("the image is blank (no ink darker or lighter than its background): draw or choose a digit");
    const [cw, ch] = [right - left + 1, bottom - top + 1];
    const crop = new Uint8Array(cw * ch);
    for (let y = 0; y < ch; y++) crop.set(pixels.subarray((top + y) * width + left, (top + y) * width + left + cw), y * cw);
    const scale = BOX / Math.max(cw, ch);
    const [dw, dh] = [Math.max(1, roundHalfEven(cw * scale)), Math.max(1, roundHalfEven(ch * scale))];
    const digit = resize(crop, cw, ch, dw, dh);
    // centre of mass in float32, as torch computes it (sums of whole numbers are exact)
    let [total, sy, sx] = [0, 0, 0];
    for (let y = 0; y < dh; y++) {
      for (let x = 0; x < dw; x++) {
        total += digit[y * dw + x];
        sy += digit[y * dw + x] * y;
        sx += digit[y * dw + x] * x;
      }
    }
    total = Math.max(total, Math.fround(1e-6));
    const comY = Math.fround(sy / total);
    const comX = Math.fround(sx / total);
    let y0 = roundHalfEven(SIZE / 2 - 0.5 - comY);
    let x0 = roundHalfEven(SIZE / 2 - 0.5 - comX);
    y0 = Math.min(Math.max(y0, 0), SIZE - dh);
    x0 = Math.min(Math.max(x0, 0), SIZE - dw);
    const canvas = new Uint8Array(SIZE * SIZE);
    for (let y = 0; y < dh; y++) canvas.set(digit.subarray(y * dw, (y + 1) * dw), (y0 + y) * SIZE + x0);
    return canvas;
  }

  return { SIZE, toMnist };
})();
