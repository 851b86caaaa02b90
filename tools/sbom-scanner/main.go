// Command sbom-scanner is an SBOM generator for BuildKit's `attest type=sbom,generator=IMAGE`.
//
// It speaks the same protocol as BuildKit's own scanner image (docker/buildkit-syft-scanner, whose
// Go module is not available from the module proxy these images are built from): BuildKit runs the
// image's entrypoint with the built filesystem mounted read-only at $BUILDKIT_SCAN_SOURCE, optional
// extra filesystems (build contexts, earlier stages) under $BUILDKIT_SCAN_SOURCE_EXTRAS, and expects
// one in-toto statement with an SPDX predicate per filesystem in $BUILDKIT_SCAN_DESTINATION, named
// `<name>.spdx.json`. The packages are found by syft, with the catalogers BuildKit's scanner selects
// (those for container images, plus file metadata and SBOMs already in the image).
//
// One difference on purpose: the SPDX document is reproducible. syft stamps it with the time of the
// scan (creationInfo.created) and a random UUID in its namespace, so the same image scanned twice
// gives two attestations, and a release that rebuilt nothing would carry new SBOM blobs. Here the
// time is SOURCE_DATE_EPOCH when the build passes one (as the generator parameter
// `SOURCE_DATE_EPOCH=N`, which BuildKit hands over as BUILDKIT_SCAN_SOURCE_DATE_EPOCH), else the
// Unix epoch, and the namespace is derived from a hash of the document's content.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/cataloging/filecataloging"
	"github.com/anchore/syft/syft/cataloging/pkgcataloging"
	"github.com/anchore/syft/syft/format"
	"github.com/anchore/syft/syft/format/spdxjson"
	"github.com/anchore/syft/syft/source"

	// the RPM database of newer distributions is SQLite: syft reads it through this driver
	_ "modernc.org/sqlite"
)

// Set at build time (-ldflags -X main.version=... -X main.syftVersion=...).
var (
	version     = "dev"
	syftVersion = "unknown"
)

const (
	envDestination = "BUILDKIT_SCAN_DESTINATION"
	envSource      = "BUILDKIT_SCAN_SOURCE"
	envExtras      = "BUILDKIT_SCAN_SOURCE_EXTRAS"
	envCatalogers  = "BUILDKIT_SCAN_SELECT_CATALOGERS"
	// BuildKit passes each generator parameter KEY=VALUE as BUILDKIT_SCAN_KEY.
	envEpochParam = "BUILDKIT_SCAN_SOURCE_DATE_EPOCH"
	envEpoch      = "SOURCE_DATE_EPOCH"

	statementType = "https://in-toto.io/Statement/v0.1"
	predicateSPDX = "https://spdx.dev/Document"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Printf("sbom-scanner %s (syft %s)\n", version, syftVersion)
		return
	}
	if err := run(context.Background()); err != nil {
		fmt.Fprintf(os.Stderr, "sbom-scanner: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	// syft writes temporary files; BuildKit mounts a tmpfs at /tmp, other callers may not.
	if err := os.MkdirAll(os.TempDir(), 0o1777); err != nil {
		return err
	}
	dest, err := requiredPath(envDestination)
	if err != nil {
		return err
	}
	core, err := requiredPath(envSource)
	if err != nil {
		return err
	}
	targets := []string{core}
	if extras := os.Getenv(envExtras); extras != "" {
		entries, err := os.ReadDir(extras)
		if err != nil {
			return err
		}
		for _, e := range entries {
			targets = append(targets, filepath.Join(extras, e.Name()))
		}
	}
	created, err := creationTime()
	if err != nil {
		return err
	}
	for _, t := range targets {
		if err := scanOne(ctx, t, dest, created); err != nil {
			return fmt.Errorf("scanning %s: %w", t, err)
		}
	}
	return nil
}

func requiredPath(name string) (string, error) {
	p := os.Getenv(name)
	if p == "" {
		return "", fmt.Errorf("%s is not set (this image is run by BuildKit as an SBOM generator)", name)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s=%s: %w", name, p, err)
	}
	return p, nil
}

func creationTime() (time.Time, error) {
	for _, name := range []string{envEpochParam, envEpoch} {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return time.Time{}, errors.New(name + " must be a number of seconds since 1970")
			}
			return time.Unix(n, 0).UTC(), nil
		}
	}
	return time.Unix(0, 0).UTC(), nil
}

func scanOne(ctx context.Context, path, dest string, created time.Time) error {
	name := filepath.Base(path)
	src, err := syft.GetSource(ctx, path,
		syft.DefaultGetSourceConfig().WithBasePath(path).WithAlias(source.Alias{Name: name}))
	if err != nil {
		return err
	}
	selection := pkgcataloging.NewSelectionRequest().
		WithDefaults(pkgcataloging.ImageTag, filecataloging.FileTag).
		WithAdditions("sbom-cataloger")
	if v := os.Getenv(envCatalogers); v != "" {
		selection = pkgcataloging.NewSelectionRequest().WithExpression(strings.Split(v, ",")...)
	}
	result, err := syft.CreateSBOM(ctx, src, syft.DefaultCreateSBOMConfig().WithCatalogerSelection(selection))
	if err != nil {
		return err
	}
	result.Descriptor.Name = "syft"
	result.Descriptor.Version = syftVersion
	enc, err := spdxjson.NewFormatEncoderWithConfig(spdxjson.DefaultEncoderConfig())
	if err != nil {
		return err
	}
	raw, err := format.Encode(*result, enc)
	if err != nil {
		return err
	}
	doc, err := reproducible(raw, created)
	if err != nil {
		return err
	}
	stmt, err := json.Marshal(map[string]any{
		"_type":         statementType,
		"predicateType": predicateSPDX,
		"subject":       []any{},
		"predicate":     doc,
	})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dest, name+".spdx.json"), append(stmt, '\n'), 0o644)
}

// reproducible replaces what syft draws from the clock and the random generator: the creation
// time, and the UUID in documentNamespace (which must stay unique per document: a hash of the rest).
func reproducible(raw []byte, created time.Time) (map[string]any, error) {
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	info, _ := doc["creationInfo"].(map[string]any)
	if info == nil {
		return nil, errors.New("syft's SPDX document has no creationInfo")
	}
	info["created"] = created.Format(time.RFC3339)
	delete(doc, "documentNamespace")
	canonical, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(canonical)
	name, _ := doc["name"].(string)
	doc["documentNamespace"] = "https://spdx.org/spdxdocs/" + sanitize(name) + "-" + hex.EncodeToString(sum[:16])
	return doc, nil
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r == ':' {
			return '-'
		}
		return r
	}, s)
}
