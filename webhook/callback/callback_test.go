package callback

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func TestTencentSign(t *testing.T) {
	// The example in Tencent Cloud IM's callback documentation.
	const want = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
	if got := TencentSign("xxxxyyyy", "1669872112"); got != want {
		t.Errorf("TencentSign = %s, want %s", got, want)
	}
	if sum := TencentSignSum("xxxxyyyy", "1669872112"); hex.EncodeToString(sum[:]) != want {
		t.Errorf("TencentSignSum = %x, want %s", sum, want)
	}
	// Longer than the stack buffer: same definition.
	long := strings.Repeat("t", 300)
	oracle := sha256.Sum256([]byte(long + "1669872112"))
	if got := TencentSign(long, "1669872112"); got != hex.EncodeToString(oracle[:]) {
		t.Errorf("TencentSign of a 300-byte token = %s, want %x", got, oracle)
	}
}

func TestTencentSignSumAllocs(t *testing.T) {
	token, rt := "a-typical-callback-token", "1669872112"
	if n := testing.AllocsPerRun(100, func() { _ = TencentSignSum(token, rt) }); n != 0 {
		t.Errorf("TencentSignSum allocates %v times per call", n)
	}
}
