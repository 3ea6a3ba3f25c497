// actionloop TTL output: drives digital pins from the decoder daemon's [outputs.serial] bytes.
//
// Byte protocol (protocols/ttl.py, docs/rig.md "TTL lines over USB serial"): one byte per change,
//   0x80 | line  ->  line high (the action's onset)
//   line         ->  line low  (its offset)
//   0x7F         ->  every line low (sent when the daemon opens and closes the port)
// line is 0..126; bytes for lines this board does not have are ignored.
//
// Line n drives PINS[n]. Edit PINS for your board and wiring; set BAUD to the daemon's
// outputs.serial.baud (native-USB boards such as Teensy and Leonardo ignore it).
// Tested: compiled for the host against a stand-in of the Arduino API and fed the daemon's
// bytes (tests/deploy/test_arduino_sketch.py); not yet flashed to a board by the project.

#include <Arduino.h>

const uint8_t PINS[] = {2, 3, 4, 5, 6, 7, 8, 9};  // line 0 -> pin 2, line 1 -> pin 3, ...
const uint8_t N_LINES = sizeof(PINS) / sizeof(PINS[0]);
const unsigned long BAUD = 115200;
const uint8_t ALL_LOW = 0x7F;
const uint8_t HIGH_BIT = 0x80;

void allLow() {
  for (uint8_t i = 0; i < N_LINES; i++) {
    digitalWrite(PINS[i], LOW);
  }
}

void setup() {
  for (uint8_t i = 0; i < N_LINES; i++) {
    pinMode(PINS[i], OUTPUT);
  }
  allLow();
  Serial.begin(BAUD);
}

void loop() {
  // Every byte stands alone: no framing to lose, nothing to wait for.
  while (Serial.available() > 0) {
    int value = Serial.read();
    if (value < 0) {
      return;
    }
    if (value == ALL_LOW) {
      allLow();
      continue;
    }
    uint8_t line = value & ALL_LOW;
    if (line < N_LINES) {
      digitalWrite(PINS[line], (value & HIGH_BIT) ? HIGH : LOW);
    }
  }
}
