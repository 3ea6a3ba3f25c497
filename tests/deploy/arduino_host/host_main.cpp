// Runs the sketch as the board would: setup() once, then loop() while bytes come (stdin).
#include "Arduino.h"

HostSerial Serial;

void setup();
void loop();

void pinMode(uint8_t pin, uint8_t mode) { std::printf("mode %u %u\n", pin, mode); }
void digitalWrite(uint8_t pin, uint8_t level) { std::printf("pin %u %u\n", pin, level); }

int main() {
  setup();
  std::printf("ready\n");
  while (Serial.available() > 0) loop();
  return 0;
}
